"""What one stop request needs, gathered once per process and handed to the app."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from openhands_stop.domain import (
    CancelQueue,
    ConversationTable,
    StopRequest,
    StopResult,
    close_session,
)
from openhands_stop.domain.models import utc_now
from openhands_stop.edge.session_key import SessionKeyVerifier


@dataclass(frozen=True)
class StopService:
    """The stop route's collaborators: the key check, the table, the queue."""

    verifier: SessionKeyVerifier
    table: ConversationTable
    cancels: CancelQueue
    resend_window: timedelta
    retry_after_seconds: int

    def stop(self, conversation_id: str, request_id: str) -> StopResult:
        # 128 random bits from os.urandom, as 32 hex digits: the stop's identity, and its
        # cancel's FIFO deduplication id (a uuid4's bits, without building a UUID object).
        stop_id = secrets.token_hex(16)
        stop = StopRequest(stop_id=stop_id, request_id=request_id, requested_at=utc_now())
        return close_session(
            conversation_id,
            stop,
            table=self.table,
            cancels=self.cancels,
            resend_window=self.resend_window,
        )
