"""Wire and storage models shared by the stop route and the agent workers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
"""What a conversation id may be: path characters, dots and unicode never reach AWS."""

CANCEL_SCHEMA_VERSION = 4
"""The cancel's version. Beyond version 1's fields, 2 carries ``run_id``, 3 ``row_version``,
4 who asked (``source_ip``, ``user_agent``, ``reason``); a worker reads every version, a
cancel without ``run_id`` or ``row_version`` being matched to a run by the row
(``Run.targeted_by``; tests/worker/test_runs.py)."""


# The statuses of OpenHands 0.53, the version the route's OpenAPI document describes.
# (Comments, not docstrings: pydantic would publish a docstring in the OpenAPI schema,
# and the schema must match OpenHands' own.)
class ConversationStatus(StrEnum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"


# The route's answer, field for field as OpenHands returns it.
class ConversationResponse(BaseModel):
    model_config = ConfigDict(title="ConversationResponse")

    status: str = Field(title="Status")
    conversation_id: str = Field(title="Conversation Id")
    message: str | None = Field(default=None, title="Message")
    conversation_status: ConversationStatus | None = None


@dataclass(frozen=True, slots=True)
class StopRequest:
    """Who asked for a stop, and when: carried into the record and the cancel message.

    A plain value like ``StopResult``: the stop route makes it from values it already
    validated, so it needs no pydantic model (one validation less per stop).
    """

    stop_id: str
    request_id: str
    requested_at: datetime
    # Who asked, for the audit trail (the row and the cancel): the caller's address and user
    # agent as API Gateway saw them, and the reason it gave (``X-Stop-Reason``), each already
    # made printable and bounded by the route. Never the key, nor anything derived from it.
    source_ip: str | None = None
    user_agent: str | None = None
    reason: str | None = None


class RunEnd(StrEnum):
    """How a run's loop ended, as the worker records it on the row (``loop_stopped_via``)."""

    QUEUE = "queue"  # its cancel arrived on a queue
    BACKSTOP = "backstop"  # the backstop read STOPPED (or a newer run) on the row
    BEFORE_START = "before_start"  # stopped while being claimed: the loop never ran
    FINISHED = "finished"  # the loop returned by itself
    FAILED = "failed"  # the loop raised
    WORKER_SHUTDOWN = "worker_shutdown"  # its worker shut down cleanly and cancelled it
    HOST = "host"  # the agent host closed it itself (an OpenHands UI close, an idle reaper)
    WORKER_LOST = "worker_lost"  # its worker was judged dead: a peer released the run


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    """One conversation's row, as far as stopping it is concerned.

    Only ``conversation_id`` and ``status`` are contract: rows may be written by other code,
    so every other field is optional and read leniently (a malformed one is absent, see
    ``aws.conversation_table.record_from_item``; tests/test_lenient_rows.py holds this).
    ``run_id`` names the current run: a claim starts a new one, a restart clears it.
    ``worker_instance`` names the worker process holding it (the key of the runs-by-worker
    index), ``stopped_from`` the status a stop found, so a retried stop can still answer it.
    """

    conversation_id: str
    status: ConversationStatus
    run_id: str | None = None
    worker_id: str | None = None
    worker_instance: str | None = None
    cancel_queue_url: str | None = None
    claimed_at: datetime | None = None
    stop_id: str | None = None
    stop_request_id: str | None = None
    stopped_at: datetime | None = None
    stopped_from: ConversationStatus | None = None
    stopped_version: int | None = None
    stop_source_ip: str | None = None
    stop_user_agent: str | None = None
    stop_reason: str | None = None
    loop_stopped_at: datetime | None = None
    loop_stopped_via: RunEnd | None = None
    version: int | None = None


class CancelMessage(BaseModel):
    """The cancel sent on SQS: OpenHands' cluster message plus what a worker needs.

    ``message_type`` and ``sid`` are exactly what OpenHands publishes; ``stop_id`` names
    the stop (a retry of the same stop carries the same one, so duplicates are harmless);
    ``run_id`` names the run it stops (``None``: the conversation was never claimed), so a
    late cancel never stops a newer run of the same conversation; ``row_version`` is the
    row's version the stop found, so a run-less cancel is matched to a run by the row's own
    counter, never by comparing two hosts' clocks.
    """

    model_config = ConfigDict(frozen=True)

    message_type: Literal["close_session"] = "close_session"
    sid: str = Field(pattern=CONVERSATION_ID_PATTERN)
    schema_version: int = CANCEL_SCHEMA_VERSION
    stop_id: str
    request_id: str
    requested_at: AwareDatetime
    run_id: str | None = None
    row_version: int | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    reason: str | None = None

    @classmethod
    def for_stop(
        cls, conversation_id: str, stop: StopRequest, record: ConversationRecord
    ) -> CancelMessage:
        """The cancel of ``stop``, for the run ``record`` (the row before the stop) held."""
        return cls(
            sid=conversation_id,
            stop_id=stop.stop_id,
            request_id=stop.request_id,
            requested_at=stop.requested_at,
            run_id=record.run_id,
            # A row without a version is version 0, as the stop's write keeps it.
            row_version=record.version if record.version is not None else 0,
            source_ip=stop.source_ip,
            user_agent=stop.user_agent,
            reason=stop.reason,
        )


def utc_now() -> datetime:
    """Now, in UTC, to the millisecond: the precision the table stores, so a cancel resent
    from the record is identical to the first one (tests/test_stop_contract.py)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
