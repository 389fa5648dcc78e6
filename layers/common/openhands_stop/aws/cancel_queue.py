"""The cancel queue in SQS: one message per stop, to the queue the conversation's worker reads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from openhands_stop.aws.failures import dependency_call
from openhands_stop.domain.models import CancelMessage

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class SqsCancelQueue:
    """Sends cancels; to a FIFO queue with the stop id as deduplication id.

    On a FIFO queue, sending the same stop twice within five minutes delivers it once, so a
    retried stop costs nothing downstream. The conversation id is the message group: cancels
    of one conversation stay in order, different conversations do not wait on each other.
    """

    def __init__(self, client: SQSClient, default_queue_url: str) -> None:
        self._client = client
        self._default_queue_url = default_queue_url

    def send(self, message: CancelMessage, queue_url: str | None) -> None:
        url = queue_url or self._default_queue_url
        body = message.model_dump_json()
        with dependency_call("sqs"):
            if url.endswith(".fifo"):
                self._client.send_message(
                    QueueUrl=url,
                    MessageBody=body,
                    MessageGroupId=message.sid,
                    MessageDeduplicationId=message.stop_id,
                )
            else:
                self._client.send_message(QueueUrl=url, MessageBody=body)
