"""The conversations table in DynamoDB: the one conditional write a stop needs."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from openhands_stop.aws.failures import dependency_call
from openhands_stop.domain.models import ConversationRecord, ConversationStatus, StopRequest
from openhands_stop.domain.ports import StopTransition

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

PARTITION_KEY = "conversation_id"

_MARK_STOPPED: dict[str, Any] = {
    "UpdateExpression": (
        "SET #status = :stopped, stop_id = :stop_id, stop_request_id = :request_id, "
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
            },
            _MARK_STOPPED,
        )
        return StopTransition(stopped_now=stopped_now, record=record)


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
    """
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
    return True, record_from_item(response["Attributes"])


def timestamp(moment: datetime) -> str:
    """How the table stores a moment: ISO 8601, UTC, milliseconds."""
    return moment.isoformat(timespec="milliseconds")


_KNOWN_STATUSES = frozenset(status.value for status in ConversationStatus)


def record_from_item(item: dict[str, Any] | None) -> ConversationRecord | None:
    """A DynamoDB item (attribute-value form) as a record; ``None`` for no item.

    A row whose status is none of ours (a newer OpenHands' ARCHIVED or ERROR, say) is not
    running by our contract, and is read as no record rather than guessed at.
    """
    if not item or item.get("status", {}).get("S") not in _KNOWN_STATUSES:
        return None
    plain = {name: _plain(value) for name, value in item.items()}
    return ConversationRecord.model_validate(plain)


def _plain(value: dict[str, Any]) -> Any:
    if "S" in value:
        return value["S"]
    if "N" in value:
        return int(value["N"]) if value["N"].lstrip("-").isdigit() else float(value["N"])
    if "BOOL" in value:
        return value["BOOL"]
    if "NULL" in value:
        return None
    return value
