"""What close_session needs from storage and messaging, as interfaces the adapters fill."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from openhands_stop.domain.models import CancelMessage, ConversationRecord, StopRequest


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


class CancelQueue(Protocol):
    def send(self, message: CancelMessage, queue_url: str | None) -> None:
        """Put ``message`` on ``queue_url``, or on the default queue when it is ``None``."""
        ...
