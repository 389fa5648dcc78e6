"""Wire and storage models shared by the stop route and the agent workers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
"""What a conversation id may be: path characters, dots and unicode never reach AWS."""

CANCEL_SCHEMA_VERSION = 1


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


class ConversationRecord(BaseModel):
    """One conversation's row in the table, as far as stopping it is concerned.

    ``conversation_id`` and ``status`` are the contract other systems read; the rest is
    what this service and its workers add.
    """

    model_config = ConfigDict(frozen=True)

    conversation_id: str
    status: ConversationStatus
    worker_id: str | None = None
    cancel_queue_url: str | None = None
    stop_id: str | None = None
    stop_request_id: str | None = None
    stopped_at: datetime | None = None
    version: int = 0


class CancelMessage(BaseModel):
    """The cancel sent on SQS: OpenHands' cluster message plus what a worker needs.

    ``message_type`` and ``sid`` are exactly what OpenHands publishes; ``stop_id`` names
    the stop (a retry of the same stop carries the same one, so duplicates are harmless).
    """

    model_config = ConfigDict(frozen=True)

    message_type: Literal["close_session"] = "close_session"
    sid: str = Field(pattern=CONVERSATION_ID_PATTERN)
    schema_version: int = CANCEL_SCHEMA_VERSION
    stop_id: str
    request_id: str
    requested_at: datetime

    @classmethod
    def for_stop(cls, conversation_id: str, stop: StopRequest) -> CancelMessage:
        return cls(
            sid=conversation_id,
            stop_id=stop.stop_id,
            request_id=stop.request_id,
            requested_at=stop.requested_at,
        )


def utc_now() -> datetime:
    return datetime.now(UTC)
