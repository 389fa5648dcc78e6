"""What close_session needs from storage and messaging, as interfaces the adapters fill."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from openhands_stop.domain.models import CancelMessage, ConversationRecord, RunEnd, StopRequest


@dataclass(frozen=True)
class StopTransition:
    """The outcome of one conditional write: did this call stop the conversation?

    ``record`` is the row as it was before the write (``None`` when there is no row).
    """

    stopped_now: bool
    record: ConversationRecord | None


class ConversationTable(Protocol):
    def mark_stopped(self, conversation_id: str, stop: StopRequest) -> StopTransition:
        """Move a STARTING or RUNNING conversation to STOPPED in one conditional write."""
        ...


@dataclass(frozen=True)
class RunEndView:
    """What a confirmed stop reads of a row: its run, and how that run's loop ended."""

    run_id: str | None
    loop_stopped_via: RunEnd | None


class RunEnds(Protocol):
    """The reads a confirmed stop makes (strongly consistent ``GetItem``s, nothing else)."""

    def run_end(self, conversation_id: str) -> RunEndView | None:
        """The row's run and recorded end; ``None`` when there is no row."""
        ...

    def worker_gone(self, worker_instance: str) -> bool:
        """Whether peers declared that worker dead (or its liveness item is gone)."""
        ...


class CancelQueue(Protocol):
    def send(self, message: CancelMessage, queue_url: str | None) -> None:
        """Put ``message`` on ``queue_url`` (the row's ``cancel_queue_url``: its run's worker
        queue), or on the stack queue when it is ``None``, is not a worker queue of this
        stack, or no longer exists (tests/test_cancel_routing.py)."""
        ...


@dataclass(frozen=True)
class ClaimResult:
    """``claimed`` or not; ``record`` is the row after a claim, or as it was when refused."""

    claimed: bool
    record: ConversationRecord | None


@dataclass(frozen=True)
class HeldRun:
    """A run's row as the runs-by-worker index shows it to the worker holding it.

    ``status`` is the stored text, whatever it is: anything but RUNNING ends the run.
    """

    conversation_id: str
    status: str | None
    run_id: str | None
    stop_id: str | None
    stop_request_id: str | None
    stopped_at: datetime | None


class ClaimTable(Protocol):
    """The conversations table as an agent worker uses it: the run lifecycle, and reads."""

    def register(self, conversation_id: str, *, now: datetime) -> ClaimResult:
        """Make a conversation STARTING: a new one, or a STOPPED one started again."""
        ...

    def claim(
        self,
        conversation_id: str,
        *,
        run_id: str,
        worker_id: str,
        worker_instance: str,
        cancel_queue_url: str,
        now: datetime,
    ) -> ClaimResult:
        """Start run ``run_id``: STARTING to RUNNING, recording who runs it and its queue."""
        ...

    def record_run_ended(
        self, conversation_id: str, run_id: str, *, via: RunEnd, now: datetime
    ) -> bool:
        """Record that run ``run_id``'s loop has ended (STOPPED if it still said RUNNING):
        ``True`` when the row now says it ended (by this call, by an earlier attempt of it
        whose answer was lost, or by a peer's release), ``False`` when the row is another
        run's or gone."""
        ...

    def release_lost_run(
        self, conversation_id: str, run_id: str, *, worker_instance: str, now: datetime
    ) -> bool:
        """End a dead worker's run on its row (``worker_lost``), only if it is still its:
        ``True`` when this call ended it."""
        ...

    def move_run(
        self,
        conversation_id: str,
        run_id: str,
        *,
        worker_instance: str,
        to_instance: str,
        cancel_queue_url: str,
        now: datetime,
    ) -> bool:
        """Record a new holder instance and queue for a run this worker holds (its worker
        made a new queue): ``True`` when this call recorded it."""
        ...

    def runs_of(self, worker_instance: str) -> list[HeldRun]:
        """The runs the runs-by-worker index holds for this worker instance. The index is
        eventually consistent: a claim of the last moment may be missing, so absence alone
        proves nothing."""
        ...

    def records(self, conversation_ids: Iterable[str]) -> dict[str, ConversationRecord]:
        """The current rows of these conversations, read strongly consistent, by id.

        Ids without a row, or whose status is none of ours, are absent from the answer; so
        is a row that cannot be read at all (logged): one bad row never hides the others.
        """
        ...


@dataclass(frozen=True)
class ReceivedMessage:
    """One delivery: its body as sent, and the receipt that deletes or releases it."""

    body: str
    receipt_handle: str
    message_id: str


class CancelInbox(Protocol):
    """One cancel queue as a worker reads it: long poll, delete when done, or hand back."""

    @property
    def queue_url(self) -> str: ...

    def receive(self, wait_seconds: int, max_messages: int = 10) -> list[ReceivedMessage]:
        """Up to ``max_messages``, waiting up to ``wait_seconds`` for the first to arrive
        (at most what the queue allows of each); none when the wait ends empty."""
        ...

    def delete(self, message: ReceivedMessage) -> None:
        """The message is handled: it is never delivered again."""
        ...

    def hand_back(self, message: ReceivedMessage) -> None:
        """Make the message visible again now, for another reader or this worker's next
        instance."""
        ...


@dataclass(frozen=True)
class SecretVersion:
    """One stage of the session-key secret: its key (``None`` when empty or absent) and when
    it was made."""

    key: str | None
    created_at: datetime | None


class KeySource(Protocol):
    """Where the route reads the session key: one stage of it (``AWSCURRENT``,
    ``AWSPREVIOUS``) per call."""

    def fetch(self, stage: str) -> SecretVersion: ...
