"""The cancel queue in SQS: one message per stop, to the queue of the worker running the run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from openhands_stop.aws.failures import dependency_call, is_missing_queue
from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.domain.models import CancelMessage

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

_log = logging.getLogger("openhands_stop.cancels")


@dataclass(frozen=True)
class QueueName:
    """A queue's identity as its URL names it: its account and its name."""

    account: str
    name: str

    @classmethod
    def from_url(cls, url: str) -> QueueName | None:
        """``https://sqs.<region>.amazonaws.com/<account>/<name>`` (or an emulation's URL)."""
        parts = urlsplit(url)
        segments = parts.path.strip("/").split("/")
        if parts.scheme not in ("https", "http") or len(segments) != 2 or not all(segments):
            return None
        return cls(account=segments[0], name=segments[1])


class CancelDestinations:
    """Where the route may send a cancel: the stack's queue, and the fleet's workers' queues.

    A row's ``cancel_queue_url`` is data, possibly written by other code: a cancel goes there
    only when it names a queue of the stack's own account under the workers' name prefix (the
    template's IAM allows exactly those too); anything else goes to the stack's queue, where
    a worker still honours it by run id (tests/test_cancel_routing.py).
    """

    def __init__(self, default_queue_url: str, *, worker_queue_prefix: str = "") -> None:
        self.default_queue_url = default_queue_url
        self._default = QueueName.from_url(default_queue_url)
        self._prefix = worker_queue_prefix

    def allows(self, queue_url: str) -> bool:
        if queue_url == self.default_queue_url:
            return True
        name = QueueName.from_url(queue_url)
        if name is None:
            return False
        return (
            bool(self._prefix)
            and self._default is not None
            and name.account == self._default.account
            and name.name.startswith(self._prefix)
        )


class SqsCancelQueue:
    """Sends cancels; to a FIFO queue with the stop id as deduplication id.

    On a FIFO queue, sending the same stop twice within five minutes delivers it once, so a
    retried stop costs nothing downstream. The conversation id is the message group: cancels
    of one conversation stay in order, different conversations do not wait on each other.
    """

    def __init__(self, client: SQSClient, destinations: CancelDestinations) -> None:
        self._client = client
        self._destinations = destinations

    def send(self, message: CancelMessage, queue_url: str | None) -> None:
        """To ``queue_url`` when allowed, else (or when it no longer exists) the stack's queue."""
        default = self._destinations.default_queue_url
        url = queue_url or default
        if url != default and not self._destinations.allows(url):
            _log.warning("cancel_queue_refused conversation_id=%s", message.sid)
            url = default
        try:
            self._send(message, url)
        except DependencyFailure as failure:
            if url == default or not is_missing_queue(failure):
                raise
            # The worker's queue is gone (clean shutdown, or swept as an orphan): its loops
            # went with it. The stack's queue keeps the cancel for whoever holds the run.
            _log.warning("cancel_queue_missing conversation_id=%s", message.sid)
            self._send(message, default)

    def _send(self, message: CancelMessage, url: str) -> None:
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
