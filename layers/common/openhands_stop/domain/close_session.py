"""close_session: the stop, as OpenHands' conversation manager defines it, made durable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from openhands_stop.domain.models import (
    CancelMessage,
    ConversationRecord,
    ConversationResponse,
    ConversationStatus,
    StopRequest,
)
from openhands_stop.domain.ports import CancelQueue, ConversationTable

STOPPED_MESSAGE = "Conversation stopped successfully"
NOT_RUNNING_MESSAGE = "Conversation was not running"


@dataclass(frozen=True)
class StopResult:
    """What a stop did: ``previous_status`` is set only when this call recorded the stop and
    sent its cancel (the loop ends when its worker carries the stop out); ``cancel_sent``
    also when it sent a recorded stop's cancel again; ``run_id`` and ``worker_instance``
    name the run the recorded stop is for and the worker holding it, when there was one
    (what a confirmed stop waits for)."""

    conversation_id: str
    previous_status: ConversationStatus | None
    cancel_sent: bool
    run_id: str | None = None
    worker_instance: str | None = None

    def response(self) -> ConversationResponse:
        if self.previous_status is None:
            return ConversationResponse(
                status="ok",
                conversation_id=self.conversation_id,
                message=NOT_RUNNING_MESSAGE,
                conversation_status=ConversationStatus.STOPPED,
            )
        return ConversationResponse(
            status="ok",
            conversation_id=self.conversation_id,
            message=STOPPED_MESSAGE,
            conversation_status=self.previous_status,
        )


def close_session(
    conversation_id: str,
    stop: StopRequest,
    *,
    table: ConversationTable,
    cancels: CancelQueue,
    resend_window: timedelta,
) -> StopResult:
    """Stop one conversation: record STOPPED, then tell its worker to cancel the loop.

    Two AWS calls on the happy path: the conditional write that also returns the previous
    state, and the send. Racing stops make one transition; the losers see STOPPED.

    Nothing is lost if the send fails after the write: the caller answers 5xx, and a retry
    of the stop within ``resend_window`` of it sends the recorded stop's cancel again
    (same ``stop_id``: a FIFO queue drops the duplicate, a worker ignores it;
    tests/test_stop_contract.py). With or without a cancel, the backstop of the worker
    holding the run reads STOPPED on the row and stops the loop
    (tests/worker/test_backstop.py).

    The cancel names the run the write stopped (the row's ``run_id`` before it), and goes to
    the queue the run's claim recorded (the stack queue when there is none): only that run's
    worker acts on it, and only on it.
    """
    transition = table.mark_stopped(conversation_id, stop)
    record = transition.record
    if transition.stopped_now and record is not None:
        cancel = CancelMessage.for_stop(conversation_id, stop, record)
        cancels.send(cancel, record.cancel_queue_url)
        return StopResult(
            conversation_id,
            previous_status=record.status,
            cancel_sent=True,
            run_id=record.run_id,
            worker_instance=record.worker_instance,
        )
    if record is not None and _stopped_recently(record, stop.requested_at, resend_window):
        cancels.send(_recorded_cancel(record), record.cancel_queue_url)
        return StopResult(conversation_id, previous_status=None, cancel_sent=True)
    return StopResult(conversation_id, previous_status=None, cancel_sent=False)


def _stopped_recently(record: ConversationRecord, now: datetime, window: timedelta) -> bool:
    return (
        record.status is ConversationStatus.STOPPED
        and record.stop_id is not None
        and record.stopped_at is not None
        and now - record.stopped_at <= window
    )


def _recorded_cancel(record: ConversationRecord) -> CancelMessage:
    """The cancel of the stop the record holds, identical to the one first sent for it."""
    assert record.stop_id is not None
    assert record.stopped_at is not None
    return CancelMessage(
        sid=record.conversation_id,
        stop_id=record.stop_id,
        request_id=record.stop_request_id or record.stop_id,
        requested_at=record.stopped_at,
        run_id=record.run_id,
        row_version=record.stopped_version,
        source_ip=record.stop_source_ip,
        user_agent=record.stop_user_agent,
        reason=record.stop_reason,
    )
