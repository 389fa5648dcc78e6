"""Per-worker cancel queues: each worker of a fleet owns one, named under the stack's prefix.

A worker creates its queue at start as a copy of the stack's queue (FIFO, same redrive to the
stack's dead-letter queue, same encryption, same policy with the ARN rewritten), keeps a
heartbeat tag on it, and deletes it on a clean shutdown. A worker that died without shutting
down leaves its queue behind; every live worker sweeps the prefix and deletes queues whose
heartbeat is older than the orphan age (tests/worker/test_worker_queues.py).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from openhands_stop.aws.failures import dependency_call, is_missing_queue
from openhands_stop.domain.errors import DependencyFailure

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

HEARTBEAT_TAG = "openhands-stop:heartbeat"
"""Seconds since the epoch at which the owning worker last showed it is alive."""
WORKER_TAG = "openhands-stop:worker-id"

QUEUE_NAME_MAX = 80
"""SQS's limit on a queue name, ``.fifo`` included."""
INSTANCE_HEX_DIGITS = 12

# The stack queue's attributes a worker's queue inherits (the rest are SQS's defaults).
_INHERITED = (
    "VisibilityTimeout",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "RedrivePolicy",
    "SqsManagedSseEnabled",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "Policy",
)


def max_prefix_length() -> int:
    return QUEUE_NAME_MAX - len(".fifo") - INSTANCE_HEX_DIGITS


@dataclass(frozen=True)
class SweptQueue:
    queue_url: str
    heartbeat: float | None


class WorkerQueues:
    """CreateQueue, TagQueue, ListQueues, ListQueueTags and DeleteQueue under one prefix."""

    def __init__(self, client: SQSClient, stack_queue_url: str, prefix: str) -> None:
        if not prefix or len(prefix) > max_prefix_length():
            raise ValueError(f"WORKER_QUEUE_PREFIX must be 1 to {max_prefix_length()} characters")
        self._client = client
        self._stack_queue_url = stack_queue_url
        self.prefix = prefix

    def create(self, worker_id: str, now: float) -> str:
        """A new queue for this worker's life, shaped like the stack's; its URL."""
        with dependency_call("sqs"):
            answer = self._client.get_queue_attributes(
                QueueUrl=self._stack_queue_url, AttributeNames=["All"]
            )
        stack: dict[str, str] = {str(k): v for k, v in answer.get("Attributes", {}).items()}
        name = f"{self.prefix}{secrets.token_hex(INSTANCE_HEX_DIGITS // 2)}.fifo"
        attributes: dict[str, str] = {"FifoQueue": "true"}
        for key in _INHERITED:
            if stack.get(key):
                attributes[key] = stack[key]
        stack_arn = stack.get("QueueArn", "")
        if "Policy" in attributes and stack_arn:
            queue_arn = f"{stack_arn.rsplit(':', 1)[0]}:{name}"
            attributes["Policy"] = _rewrite_policy(attributes["Policy"], stack_arn, queue_arn)
        request: Any = {
            "QueueName": name,
            "Attributes": attributes,
            "tags": {HEARTBEAT_TAG: _seconds(now), WORKER_TAG: worker_id[:256]},
        }
        with dependency_call("sqs"):
            url: str = self._client.create_queue(**request)["QueueUrl"]
        return url

    def heartbeat(self, queue_url: str, now: float) -> bool:
        """Show the queue's owner is alive; ``False`` when the queue no longer exists."""
        try:
            with dependency_call("sqs"):
                self._client.tag_queue(QueueUrl=queue_url, Tags={HEARTBEAT_TAG: _seconds(now)})
        except DependencyFailure as failure:
            if is_missing_queue(failure):
                return False
            raise
        return True

    def delete(self, queue_url: str) -> None:
        try:
            with dependency_call("sqs"):
                self._client.delete_queue(QueueUrl=queue_url)
        except DependencyFailure as failure:
            if not is_missing_queue(failure):
                raise

    def sweep(self, *, now: float, orphan_after: float, keep: str) -> list[SweptQueue]:
        """Delete the prefix's queues whose heartbeat is older than ``orphan_after`` seconds.

        A queue without a heartbeat tag (being created right now, or made by hand) is kept.
        """
        swept: list[SweptQueue] = []
        for url in self._list():
            if url == keep:
                continue
            try:
                with dependency_call("sqs"):
                    tags = self._client.list_queue_tags(QueueUrl=url).get("Tags", {})
            except DependencyFailure as failure:
                if is_missing_queue(failure):
                    continue
                raise
            beat = _parse_seconds(tags.get(HEARTBEAT_TAG))
            if beat is not None and now - beat > orphan_after:
                self.delete(url)
                swept.append(SweptQueue(url, beat))
        return swept

    def _list(self) -> list[str]:
        urls: list[str] = []
        request: dict[str, Any] = {"QueueNamePrefix": self.prefix, "MaxResults": 1000}
        while True:
            with dependency_call("sqs"):
                response = self._client.list_queues(**request)
            urls.extend(response.get("QueueUrls", []))
            token = response.get("NextToken")
            if not token:
                return urls
            request["NextToken"] = token


def _rewrite_policy(policy: str, stack_arn: str, queue_arn: str) -> str:
    """The stack queue's policy, for this queue: its own ARN wherever the stack's appears."""
    document = json.loads(policy)
    return json.dumps(document).replace(json.dumps(stack_arn)[1:-1], json.dumps(queue_arn)[1:-1])


def _seconds(now: float) -> str:
    return str(int(now))


def _parse_seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
