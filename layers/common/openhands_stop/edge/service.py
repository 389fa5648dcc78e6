"""What one stop request needs, gathered once per process and handed to the app."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from openhands_stop.domain import (
    CancelQueue,
    ConversationTable,
    StopRequest,
    StopResult,
    close_session,
)
from openhands_stop.domain.confirmation import (
    Confirmation,
    StopConfirmation,
    wait_for_loop_end,
)
from openhands_stop.domain.models import ConversationStatus, utc_now
from openhands_stop.domain.ports import RunEnds
from openhands_stop.edge.session_key import SessionKeyVerifier


@dataclass(frozen=True)
class Requester:
    """Who asked for a stop, as the route saw it (already printable and bounded)."""

    source_ip: str | None = None
    user_agent: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class StopService:
    """The stop route's collaborators: the key check, the table, the queue, the wait."""

    verifier: SessionKeyVerifier
    table: ConversationTable
    cancels: CancelQueue
    resend_window: timedelta
    retry_after_seconds: int
    run_ends: RunEnds | None = None
    stop_wait_seconds: float = 0.0

    def stop(
        self, conversation_id: str, request_id: str, requester: Requester | None = None
    ) -> StopResult:
        # 128 random bits from os.urandom, as 32 hex digits: the stop's identity, and its
        # cancel's FIFO deduplication id (a uuid4's bits, without building a UUID object).
        stop_id = secrets.token_hex(16)
        who = requester or Requester()
        stop = StopRequest(
            stop_id=stop_id,
            request_id=request_id,
            requested_at=utc_now(),
            source_ip=who.source_ip,
            user_agent=who.user_agent,
            reason=who.reason,
        )
        return close_session(
            conversation_id,
            stop,
            table=self.table,
            cancels=self.cancels,
            resend_window=self.resend_window,
        )

    async def confirm(self, result: StopResult, started: float) -> StopConfirmation:
        """With a wait configured, until the worker has recorded the end of the run this
        stop stopped (or the wait runs out); ``started`` is the request's ``monotonic()``."""
        if result.previous_status is not ConversationStatus.RUNNING or result.run_id is None:
            return StopConfirmation(Confirmation.NO_RUN)
        if self.stop_wait_seconds <= 0 or self.run_ends is None:
            return StopConfirmation(Confirmation.NOT_WAITED)
        return await wait_for_loop_end(
            result.conversation_id,
            result.run_id,
            result.worker_instance,
            run_ends=self.run_ends,
            wait_seconds=self.stop_wait_seconds,
            started=started,
            monotonic=time.monotonic,
            sleep=asyncio.sleep,
        )
