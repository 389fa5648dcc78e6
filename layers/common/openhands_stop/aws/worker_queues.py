"""Per-worker cancel queues: each worker of a fleet owns one, named under the stack's prefix.

A worker instance creates its queue, ``<prefix><instance>.fifo``, at start as a copy of the
stack queue (FIFO, the same redrive to the stack's dead-letter queue, encryption,
throughput mode, and policy with the ARN rewritten, all set at CreateQueue: no worker needs
SetQueueAttributes, so none can rewrite a peer's policy), and deletes it on a clean shutdown.
A dead worker's queue is deleted by the peer that judges it dead (``worker.liveness``); a
queue whose instance has no liveness item at all is swept when a worker starts
(tests/worker/test_worker_queues.py).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from openhands_stop.aws.cancel_queue import QueueName, worker_queue_pattern
from openhands_stop.aws.failures import dependency_call, is_missing_queue
from openhands_stop.constants import WORKER_QUEUE_PREFIX_MAX
from openhands_stop.domain.errors import DependencyFailure

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

# The stack queue's attributes a worker's queue inherits (the rest are SQS's defaults).
INHERITED_ATTRIBUTES = (
    "VisibilityTimeout",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "RedrivePolicy",
    "SqsManagedSseEnabled",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "Policy",
)


class WorkerQueues:
    """CreateQueue, GetQueueAttributes, ListQueues and DeleteQueue under one prefix."""

    def __init__(self, client: SQSClient, stack_queue_url: str, prefix: str) -> None:
        if not prefix or len(prefix) > WORKER_QUEUE_PREFIX_MAX:
            raise ValueError(
                f"WORKER_QUEUE_PREFIX must be 1 to {WORKER_QUEUE_PREFIX_MAX} characters"
            )
        stack = QueueName.from_url(stack_queue_url)
        if stack is None:
            raise ValueError("CANCEL_QUEUE_URL must be a queue URL")
        self._client = client
        self._stack_queue_url = stack_queue_url
        self._stack = stack
        self._pattern = worker_queue_pattern(prefix)
        self.prefix = prefix

    def url_for(self, instance: str) -> str:
        """The URL the instance's queue has (or will have): SQS's URLs are name-derived."""
        return f"{self._stack.origin}/{self._stack.account}/{self.prefix}{instance}.fifo"

    def instance_of(self, queue_url: str) -> str | None:
        """The instance a worker queue's URL names; ``None`` for any other URL."""
        name = QueueName.from_url(queue_url)
        if name is None or self._pattern.fullmatch(name.name) is None:
            return None
        return name.name.removeprefix(self.prefix).removesuffix(".fifo")

    def create(self, instance: str) -> str:
        """The instance's queue, shaped like the stack's; its URL."""
        with dependency_call("sqs"):
            answer = self._client.get_queue_attributes(
                QueueUrl=self._stack_queue_url, AttributeNames=["All"]
            )
        stack: dict[str, str] = {str(k): v for k, v in answer.get("Attributes", {}).items()}
        name = f"{self.prefix}{instance}.fifo"
        attributes: dict[str, str] = {"FifoQueue": "true"}
        for key in INHERITED_ATTRIBUTES:
            if stack.get(key):
                attributes[key] = stack[key]
        stack_arn = stack.get("QueueArn", "")
        if "Policy" in attributes and stack_arn:
            queue_arn = f"{stack_arn.rsplit(':', 1)[0]}:{name}"
            attributes["Policy"] = _rewrite_policy(attributes["Policy"], stack_arn, queue_arn)
        request: Any = {"QueueName": name, "Attributes": attributes}
        with dependency_call("sqs"):
            url: str = self._client.create_queue(**request)["QueueUrl"]
        return url

    def delete(self, queue_url: str) -> None:
        """Delete a worker queue (gone already: done); any other URL is refused."""
        if self.instance_of(queue_url) is None:
            raise ValueError("not a worker queue of this stack")
        try:
            with dependency_call("sqs"):
                self._client.delete_queue(QueueUrl=queue_url)
        except DependencyFailure as failure:
            if not is_missing_queue(failure):
                raise

    def listed(self) -> dict[str, str]:
        """The worker queues under the prefix, by instance (names that are not a worker
        queue's exactly are never listed, so never deleted)."""
        found: dict[str, str] = {}
        request: dict[str, Any] = {"QueueNamePrefix": self.prefix, "MaxResults": 1000}
        while True:
            with dependency_call("sqs"):
                response = self._client.list_queues(**request)
            for url in response.get("QueueUrls", []):
                instance = self.instance_of(url)
                if instance is not None:
                    found[instance] = url
            token = response.get("NextToken")
            if not token:
                return found
            request["NextToken"] = token

    def forward(self, instance: str, body: str, *, group_id: str, deduplication_id: str) -> bool:
        """Send a message, as received, to the instance's queue; ``False`` when that queue
        is gone (its worker is making a new one, or is dead: liveness covers both)."""
        try:
            with dependency_call("sqs"):
                self._client.send_message(
                    QueueUrl=self.url_for(instance),
                    MessageBody=body,
                    MessageGroupId=group_id,
                    MessageDeduplicationId=deduplication_id,
                )
        except DependencyFailure as failure:
            if is_missing_queue(failure):
                return False
            raise
        return True


def dead_letter_url(client: SQSClient, queue_url: str) -> str | None:
    """The URL of ``queue_url``'s dead-letter queue (its redrive target), if it has one."""
    with dependency_call("sqs"):
        answer = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])
    policy = answer.get("Attributes", {}).get("RedrivePolicy")
    source = QueueName.from_url(queue_url)
    if not policy or source is None:
        return None
    try:
        arn = str(json.loads(policy)["deadLetterTargetArn"])
    except (ValueError, KeyError, TypeError):
        return None
    parts = arn.split(":")
    if len(parts) != 6:
        return None
    return f"{source.origin}/{parts[4]}/{parts[5]}"


def _rewrite_policy(policy: str, stack_arn: str, queue_arn: str) -> str:
    """The stack queue's policy, for this queue: its own ARN wherever the stack's appears."""
    document = json.loads(policy)
    return json.dumps(document).replace(json.dumps(stack_arn)[1:-1], json.dumps(queue_arn)[1:-1])
