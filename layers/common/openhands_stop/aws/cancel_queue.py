"""The cancel queues in SQS: one message per stop, to the queue of the worker running the run."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from openhands_stop.aws.failures import dependency_call, is_missing_queue
from openhands_stop.constants import INSTANCE_HEX_DIGITS
from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.domain.models import CancelMessage

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

_log = logging.getLogger("openhands_stop.cancels")


@dataclass(frozen=True)
class QueueName:
    """A queue's identity as its URL names it: where it is served, its account, its name."""

    origin: str
    account: str
    name: str

    @classmethod
    def from_url(cls, url: str) -> QueueName | None:
        """``https://sqs.<region>.amazonaws.com/<account>/<name>`` (or an emulation's URL);
        ``None`` for anything else, a query or a fragment included."""
        parts = urlsplit(url)
        segments = parts.path.split("/")
        if (
            parts.scheme not in ("https", "http")
            or not parts.netloc
            or parts.query
            or parts.fragment
            or "?" in url
            or "#" in url
            or len(segments) != 3
            or segments[0]
            or not all(segments[1:])
        ):
            return None
        return cls(f"{parts.scheme}://{parts.netloc}", segments[1], segments[2])


def worker_queue_pattern(prefix: str) -> re.Pattern[str]:
    """A worker queue's name: the stack's prefix, the worker's instance (``INSTANCE_HEX_DIGITS``
    hex), ``.fifo``; nothing else (the template's IAM grants exactly
    ``<prefix>????????????.fifo``: tests/template/test_template.py)."""
    return re.compile(re.escape(prefix) + f"[0-9a-f]{{{INSTANCE_HEX_DIGITS}}}" + r"\.fifo")


class CancelDestinations:
    """Where the route may send a cancel: the stack queue, and the fleet's workers' queues.

    A row's ``cancel_queue_url`` is data, possibly written by other code: a cancel goes there
    only when it names a worker queue of this stack exactly (the stack queue's scheme, host
    and account; a name of the prefix, an instance's hex digits and ``.fifo``; no query or
    fragment); anything else goes to the stack queue, whose readers route it to the run's
    holder (tests/test_cancel_routing.py).
    """

    def __init__(self, stack_queue_url: str, *, worker_queue_prefix: str = "") -> None:
        self.stack_queue_url = stack_queue_url
        self._stack = QueueName.from_url(stack_queue_url)
        self._pattern = worker_queue_pattern(worker_queue_prefix) if worker_queue_prefix else None

    def allows(self, queue_url: str) -> bool:
        if queue_url == self.stack_queue_url:
            return True
        name = QueueName.from_url(queue_url)
        return (
            name is not None
            and self._pattern is not None
            and self._stack is not None
            and name.origin == self._stack.origin
            and name.account == self._stack.account
            and self._pattern.fullmatch(name.name) is not None
        )


class SqsCancelQueue:
    """``CancelQueue`` (domain.ports) on SQS; to a FIFO queue with the stop id as
    deduplication id.

    On a FIFO queue, sending the same stop twice within five minutes delivers it once, so a
    retried stop costs nothing downstream. The conversation id is the message group: cancels
    of one conversation stay in order, different conversations do not wait on each other.
    """

    def __init__(self, client: SQSClient, destinations: CancelDestinations) -> None:
        self._client = client
        self._destinations = destinations

    def send(self, message: CancelMessage, queue_url: str | None) -> None:
        stack_queue_url = self._destinations.stack_queue_url
        url = queue_url or stack_queue_url
        if url != stack_queue_url and not self._destinations.allows(url):
            _log.warning("cancel_queue_refused conversation_id=%s", message.sid)
            url = stack_queue_url
        try:
            self._send(message, url)
        except DependencyFailure as failure:
            if url == stack_queue_url or not is_missing_queue(failure):
                raise
            # The worker's queue is gone (clean shutdown, or swept as an orphan): its loops
            # went with it. The stack queue keeps the cancel for whoever holds the run.
            _log.warning("cancel_queue_missing conversation_id=%s", message.sid)
            self._send(message, stack_queue_url)

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
