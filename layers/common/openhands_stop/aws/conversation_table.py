"""The conversations table in DynamoDB: the one conditional write a stop needs."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from openhands_stop.aws.failures import dependency_call
from openhands_stop.constants import PARTITION_KEY
from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.domain.models import (
    ConversationRecord,
    ConversationStatus,
    RunEnd,
    StopRequest,
)
from openhands_stop.domain.ports import HeldRun, StopTransition

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_log = logging.getLogger("openhands_stop.rows")

_MARK_STOPPED: dict[str, Any] = {
    # ``stopped_from`` and ``stopped_version`` keep what the stop found (operands read the row
    # as it was before the write): a retry of this stop, refused by its own condition, still
    # answers the status it stopped, and a resent cancel is identical to the first.
    "UpdateExpression": (
        "SET #status = :stopped, stopped_from = #status, "
        "stopped_version = if_not_exists(version, :zero), "
        "stop_id = :stop_id, stop_request_id = :request_id, stop_source_ip = :source_ip, "
        "stop_user_agent = :user_agent, stop_reason = :reason, "
        "stopped_at = :now, updated_at = :now ADD version :one"
    ),
    # A missing row has no status, so unknown conversations fail the condition too:
    # the write never creates a row.
    "ConditionExpression": "#status IN (:starting, :running)",
    "ExpressionAttributeNames": {"#status": "status"},
    "ReturnValues": "ALL_OLD",
    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
}


class DynamoConversationTable:
    """Reads and writes conversation records; the schema lives in ``record_from_item``."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table_name = table_name

    def mark_stopped(self, conversation_id: str, stop: StopRequest) -> StopTransition:
        stopped_now, record = conditional_update(
            self._client,
            self._table_name,
            conversation_id,
            {
                ":stopped": {"S": ConversationStatus.STOPPED.value},
                ":starting": {"S": ConversationStatus.STARTING.value},
                ":running": {"S": ConversationStatus.RUNNING.value},
                ":stop_id": {"S": stop.stop_id},
                ":request_id": {"S": stop.request_id},
                ":now": {"S": timestamp(stop.requested_at)},
                ":one": {"N": "1"},
                ":zero": {"N": "0"},
                ":source_ip": _optional(stop.source_ip),
                ":user_agent": _optional(stop.user_agent),
                ":reason": _optional(stop.reason),
            },
            _MARK_STOPPED,
        )
        if not stopped_now and record is not None and _stopped_by(record, stop.stop_id):
            # Our own earlier attempt was applied and its answer lost (a timeout, then the
            # SDK's retry): this request did stop it (tests/reliability/test_ambiguous_writes.py).
            return StopTransition(stopped_now=True, record=_as_before_stop(record))
        return StopTransition(stopped_now=stopped_now, record=record)


def _optional(text: str | None) -> dict[str, Any]:
    return {"S": text} if text else {"NULL": True}


def _stopped_by(record: ConversationRecord, stop_id: str) -> bool:
    return (
        record.status is ConversationStatus.STOPPED
        and record.stop_id == stop_id
        and record.stopped_from is not None
    )


def _as_before_stop(record: ConversationRecord) -> ConversationRecord:
    """The row as the stop found it, rebuilt from what the stop kept on it."""
    assert record.stopped_from is not None
    return replace(
        record,
        status=record.stopped_from,
        version=record.stopped_version,
        stop_id=None,
        stop_request_id=None,
        stopped_at=None,
        stopped_from=None,
        stopped_version=None,
        stop_source_ip=None,
        stop_user_agent=None,
        stop_reason=None,
    )


def conditional_update(
    client: DynamoDBClient,
    table_name: str,
    conversation_id: str,
    values: dict[str, Any],
    expression: dict[str, Any],
) -> tuple[bool, ConversationRecord | None]:
    """One conditional UpdateItem on a conversation's row: was it applied, and the row.

    The row comes back either way, in one call: as ``ReturnValues`` asks when the write is
    applied, and as it is now (``ReturnValuesOnConditionCheckFailure``) when it is refused.

    A ``version`` that other code stored as something else than a whole number makes
    ``ADD version`` fail validation: the write is then made once more with the version
    treated as absent (set to 1), so such a row never fails every stop forever
    (tests/test_lenient_rows.py).
    """
    try:
        return _conditional_update(client, table_name, conversation_id, values, expression)
    except DependencyFailure as failure:
        if failure.detail != "ValidationException" or _ADD_VERSION not in _update(expression):
            raise
    _log.warning("malformed_row_fields conversation_id=%s fields=version", conversation_id)
    set_part, remove, rest = _update(expression).replace(_ADD_VERSION, "").partition(" REMOVE ")
    repaired = {**expression, "UpdateExpression": f"{set_part}, version = :one{remove}{rest}"}
    return _conditional_update(client, table_name, conversation_id, values, repaired)


_ADD_VERSION = " ADD version :one"


def _update(expression: dict[str, Any]) -> str:
    update: str = expression["UpdateExpression"]
    return update


def _conditional_update(
    client: DynamoDBClient,
    table_name: str,
    conversation_id: str,
    values: dict[str, Any],
    expression: dict[str, Any],
) -> tuple[bool, ConversationRecord | None]:
    with dependency_call("dynamodb"):
        try:
            response = client.update_item(
                TableName=table_name,
                Key={PARTITION_KEY: {"S": conversation_id}},
                ExpressionAttributeValues=values,
                **expression,
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            current: dict[str, Any] | None = error.response.get("Item")  # type: ignore[assignment]
            return False, record_from_item(current)
    return True, record_from_item(response.get("Attributes"))


def timestamp(moment: datetime) -> str:
    """How the table stores a moment: ISO 8601, UTC, milliseconds."""
    return as_utc(moment).isoformat(timespec="milliseconds")


def as_utc(moment: datetime) -> datetime:
    """A moment in UTC; one without a timezone is read as UTC (rows written by other code)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


_KNOWN_STATUSES = frozenset(status.value for status in ConversationStatus)
_STRING_FIELDS = (
    "run_id",
    "worker_id",
    "worker_instance",
    "cancel_queue_url",
    "stop_id",
    "stop_request_id",
    "stop_source_ip",
    "stop_user_agent",
    "stop_reason",
)
_MOMENT_FIELDS = ("claimed_at", "stopped_at", "loop_stopped_at")
_RUN_ENDS = frozenset(end.value for end in RunEnd)


def record_from_item(item: dict[str, Any] | None) -> ConversationRecord | None:
    """A DynamoDB item (attribute-value form) as a record; ``None`` for no item.

    Only ``status`` is contract. A row whose status is none of ours (a newer OpenHands'
    ARCHIVED or ERROR, say) is not running by our contract, and is read as no record rather
    than guessed at. Any other field that is missing or malformed (a number where a string
    belongs, a moment that does not parse, a fractional version) is read as absent and
    logged by name, never by value, so a row written by other code can never turn a stop
    into a 500 that repeats forever (tests/test_lenient_rows.py).
    """
    if not item:
        return None
    status = _string(item.get("status"))
    conversation_id = _string(item.get(PARTITION_KEY))
    if status not in _KNOWN_STATUSES or conversation_id is None:
        return None
    malformed: list[str] = []
    strings: dict[str, str | None] = {}
    for name in _STRING_FIELDS:
        strings[name] = _string(item.get(name))
        if strings[name] is None and name in item and "NULL" not in item[name]:
            malformed.append(name)
    moments: dict[str, datetime | None] = {}
    for name in _MOMENT_FIELDS:
        moments[name] = _moment(item.get(name))
        if moments[name] is None and name in item and "NULL" not in item[name]:
            malformed.append(name)
    via = _string(item.get("loop_stopped_via"))
    if via is not None and via not in _RUN_ENDS:
        malformed.append("loop_stopped_via")
        via = None
    stopped_from = _string(item.get("stopped_from"))
    if stopped_from is not None and stopped_from not in _KNOWN_STATUSES:
        malformed.append("stopped_from")
        stopped_from = None
    integers: dict[str, int | None] = {}
    for name in ("version", "stopped_version"):
        integers[name] = _integer(item.get(name))
        if integers[name] is None and name in item and "NULL" not in item[name]:
            malformed.append(name)
    if malformed:
        _log.warning(
            "malformed_row_fields conversation_id=%s fields=%s",
            conversation_id,
            ",".join(sorted(malformed)),
        )
    return ConversationRecord(
        conversation_id=conversation_id,
        status=ConversationStatus(status),
        run_id=strings["run_id"],
        worker_id=strings["worker_id"],
        worker_instance=strings["worker_instance"],
        cancel_queue_url=strings["cancel_queue_url"],
        claimed_at=moments["claimed_at"],
        stop_id=strings["stop_id"],
        stop_request_id=strings["stop_request_id"],
        stopped_at=moments["stopped_at"],
        stopped_from=ConversationStatus(stopped_from) if stopped_from is not None else None,
        stopped_version=integers["stopped_version"],
        stop_source_ip=strings["stop_source_ip"],
        stop_user_agent=strings["stop_user_agent"],
        stop_reason=strings["stop_reason"],
        loop_stopped_at=moments["loop_stopped_at"],
        loop_stopped_via=RunEnd(via) if via is not None else None,
        version=integers["version"],
    )


def _string(value: dict[str, Any] | None) -> str | None:
    text = value.get("S") if isinstance(value, dict) else None
    return text if isinstance(text, str) and text else None


def _moment(value: dict[str, Any] | None) -> datetime | None:
    text = _string(value)
    if text is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        return None


def _integer(value: dict[str, Any] | None) -> int | None:
    number = value.get("N") if isinstance(value, dict) else None
    if not isinstance(number, str):
        return None
    try:
        return int(number)
    except ValueError:
        return None


def held_run_from_item(item: dict[str, Any]) -> HeldRun | None:
    """A runs-by-worker index entry; its status as stored, whatever it is (a status none of
    ours means the run is over), and ``None`` only without a conversation id."""
    conversation_id = _string(item.get(PARTITION_KEY))
    if conversation_id is None:
        return None
    status = item.get("status", {}).get("S") if isinstance(item.get("status"), dict) else None
    return HeldRun(
        conversation_id=conversation_id,
        status=status if isinstance(status, str) else None,
        run_id=_string(item.get("run_id")),
        stop_id=_string(item.get("stop_id")),
        stop_request_id=_string(item.get("stop_request_id")),
        stopped_at=_moment(item.get("stopped_at")),
    )
