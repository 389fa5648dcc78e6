"""``CancelInbox`` (domain.ports) on one SQS queue: what each call means is said there."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from openhands_stop.aws.failures import dependency_call
from openhands_stop.aws.worker_queues import dead_letter_url
from openhands_stop.constants import LONG_POLL_SECONDS_MAX
from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.domain.ports import ReceivedMessage

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class SqsCancelInbox:
    """ReceiveMessage, DeleteMessage and ChangeMessageVisibility on one queue: nothing else.

    ``address`` is asked at every call: a worker's own queue gets a new name when the
    worker joins again (``worker.liveness``), and its inbox follows without being told.
    """

    def __init__(self, client: SQSClient, address: Callable[[], str]) -> None:
        self._client = client
        self._address = address

    @property
    def queue_url(self) -> str:
        return self._address()

    def receive(self, wait_seconds: int, max_messages: int = 10) -> list[ReceivedMessage]:
        # Held to what SQS accepts: a wait of 0 to LONG_POLL_SECONDS_MAX, 1 to 10 messages.
        wait = max(0, min(wait_seconds, LONG_POLL_SECONDS_MAX))
        with dependency_call("sqs"):
            response = self._client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=max(1, min(max_messages, 10)),
                WaitTimeSeconds=wait,
            )
        return [
            ReceivedMessage(
                body=message.get("Body", ""),
                receipt_handle=message["ReceiptHandle"],
                message_id=message.get("MessageId", ""),
            )
            for message in response.get("Messages", [])
        ]

    def delete(self, message: ReceivedMessage) -> None:
        with dependency_call("sqs"):
            self._client.delete_message(
                QueueUrl=self.queue_url, ReceiptHandle=message.receipt_handle
            )

    def hand_back(self, message: ReceivedMessage) -> None:
        with dependency_call("sqs"):
            self._client.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=message.receipt_handle, VisibilityTimeout=0
            )


class DeadLetterCopies:
    """A copy of an unreadable message on the stack queue's dead-letter queue, for a human
    (found once, from the stack queue's redrive policy)."""

    def __init__(self, client: SQSClient, stack_queue_url: str) -> None:
        self._client = client
        self._stack_queue_url = stack_queue_url
        self._url: str | None = None

    def keep(self, message: ReceivedMessage) -> None:
        if self._url is None:
            self._url = dead_letter_url(self._client, self._stack_queue_url)
        if self._url is None:
            raise DependencyFailure("sqs", "NoDeadLetterQueue", transient=False)
        with dependency_call("sqs"):
            self._client.send_message(
                QueueUrl=self._url,
                MessageBody=message.body or "(empty)",
                MessageGroupId="unreadable",
                MessageDeduplicationId=message.message_id or "unreadable",
            )
