"""Make moto's SQS FIFO long poll deliver a message group as soon as it unlocks, as SQS does.

moto's ``SQSBackend.receive_message`` copies the queue's in-flight groups once, when a long
poll begins, and only refreshes that copy when one of their messages times out. A group
whose in-flight message is deleted (or made visible again with ``ChangeMessageVisibility``
to 0) during the wait stays locked for the rest of it: a worker that deletes cancel A of a
conversation while its next long poll waits does not receive cancel B of that conversation
until the poll ends empty (about ``WaitTimeSeconds`` later). Meanwhile the poll spins: its
wait returns at once while any message is visible, deliverable or not.

``deliver_unlocked_fifo_groups()`` runs each long poll as zero-wait passes of moto's own
receive (each takes a fresh copy of the in-flight groups, so FIFO order and one batch in
flight per group are moto's rules, unchanged), under the queue's lock, and waits between
passes on the queue's condition, which a send, a delete and a visibility change notify; a
timer wakes it when a message's visibility timeout or delay runs out. The processes that
run moto call it, beside ``local.atomic_moto.serialize_dynamodb_writes()``.
"""

from __future__ import annotations

import functools
import time
from typing import Any

_MARK = "_openhands_stop_fifo_groups"
_LONGEST_NAP = 1.0
"""Seconds a waiting poll sleeps at most between passes, whatever the timers say."""


def _seconds_to_next_timer(queue: Any, remaining: float) -> float:
    """Until the first message of ``queue`` becomes visible or its delay ends, at most
    ``remaining`` (and ``_LONGEST_NAP``)."""
    now_ms = time.time() * 1000
    timers = [
        at
        for message in queue._messages
        for at in (message.visible_at, message.delayed_until)
        if at > now_ms
    ]
    until_timer = (min(timers) - now_ms) / 1000 if timers else _LONGEST_NAP
    return max(0.0, min(remaining, until_timer, _LONGEST_NAP))


def _marked(function: Any) -> Any:
    setattr(function, _MARK, True)
    return function


def deliver_unlocked_fifo_groups() -> None:
    """Patch moto's SQS backend so a long poll sees groups unlock while it waits (idempotent)."""
    from moto.sqs.models import Queue, SQSBackend

    if getattr(SQSBackend.receive_message, _MARK, False):
        return
    receive = SQSBackend.receive_message
    change_visibility = SQSBackend.change_message_visibility
    delete = Queue.delete_message

    @functools.wraps(receive)
    def receive_message(  # noqa: PLR0917 - moto's own signature
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> list[Any]:
        queue = self.get_queue(queue_name)
        deadline = time.monotonic() + (wait_seconds_timeout or 0)
        with queue._messages_lock:
            while True:
                result: list[Any] = receive(
                    self, queue_name, count, 0, visibility_timeout, message_attribute_names
                )
                remaining = deadline - time.monotonic()
                if result or remaining <= 0:
                    return result
                # Releases the lock while waiting: a send, delete or visibility change
                # (each notifies under it) wakes this poll for another pass.
                queue._messages_lock.wait(_seconds_to_next_timer(queue, remaining))

    @functools.wraps(change_visibility)
    def change_message_visibility(
        self: Any, queue_name: str, receipt_handle: str, visibility_timeout: int
    ) -> None:
        queue = self.get_queue(queue_name)
        with queue._messages_lock:
            change_visibility(self, queue_name, receipt_handle, visibility_timeout)
            queue._messages_lock.notify_all()

    @functools.wraps(delete)
    def delete_message(self: Any, receipt_handle: str) -> None:
        with self._messages_lock:
            delete(self, receipt_handle)
            self._messages_lock.notify_all()

    # receive_message last: its mark is what makes a second call return at once.
    for owner, function in (
        (SQSBackend, change_message_visibility),
        (Queue, delete_message),
        (SQSBackend, receive_message),
    ):
        setattr(owner, function.__name__, _marked(function))
