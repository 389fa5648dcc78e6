"""The conversations table as an agent worker sees it: the claim, and the backstop's read."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from openhands_stop.aws.conversation_table import (
    PARTITION_KEY,
    conditional_update,
    record_from_item,
    timestamp,
)
from openhands_stop.aws.failures import dependency_call
from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.domain.models import ConversationRecord, ConversationStatus

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

BATCH_GET_MAX_KEYS = 100
"""BatchGetItem's limit on keys per call."""

_UNPROCESSED_ROUNDS = 5

_CLAIM: dict[str, Any] = {
    "UpdateExpression": (
        "SET #status = :running, worker_id = :worker, cancel_queue_url = :queue, "
        "claimed_at = :now, updated_at = :now ADD version :one"
    ),
    # Only a STARTING conversation can be claimed: a missing row has no status, and a STOPPED
    # one was stopped before its loop started, so the stop wins. A retry of our own claim
    # (the first attempt succeeded but its answer was lost) finds it RUNNING with our id.
    "ConditionExpression": "#status = :starting OR (#status = :running AND worker_id = :worker)",
    "ExpressionAttributeNames": {"#status": "status"},
    "ReturnValues": "ALL_NEW",
    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
}

# What the backstop needs of a row: enough to cancel, and to log the stop's latency.
_BACKSTOP_PROJECTION = "conversation_id, #status, stop_id, stop_request_id, stopped_at"


@dataclass(frozen=True)
class ClaimResult:
    """``claimed`` or not; ``record`` is the row after a claim, or as it was when refused."""

    claimed: bool
    record: ConversationRecord | None


class DynamoClaimTable:
    """The worker's two uses of the table: UpdateItem to claim, BatchGetItem for the backstop."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table_name = table_name

    def claim(
        self, conversation_id: str, *, worker_id: str, cancel_queue_url: str, now: datetime
    ) -> ClaimResult:
        """Move a STARTING conversation to RUNNING, owned by this worker and its queue."""
        claimed, record = conditional_update(
            self._client,
            self._table_name,
            conversation_id,
            {
                ":running": {"S": ConversationStatus.RUNNING.value},
                ":starting": {"S": ConversationStatus.STARTING.value},
                ":worker": {"S": worker_id},
                ":queue": {"S": cancel_queue_url},
                ":now": {"S": timestamp(now)},
                ":one": {"N": "1"},
            },
            _CLAIM,
        )
        return ClaimResult(claimed=claimed, record=record)

    def records(self, conversation_ids: Iterable[str]) -> dict[str, ConversationRecord]:
        """The current rows of these conversations (strongly consistent), by id.

        Ids without a row, or whose status is none of ours, are absent from the answer.
        """
        ids = sorted(set(conversation_ids))
        found: dict[str, ConversationRecord] = {}
        for start in range(0, len(ids), BATCH_GET_MAX_KEYS):
            for item in self._batch_get(ids[start : start + BATCH_GET_MAX_KEYS]):
                record = record_from_item(item)
                if record is not None:
                    found[record.conversation_id] = record
        return found

    def _batch_get(self, ids: list[str]) -> list[dict[str, Any]]:
        request: dict[str, Any] = {
            self._table_name: {
                "Keys": [{PARTITION_KEY: {"S": conversation_id}} for conversation_id in ids],
                "ProjectionExpression": _BACKSTOP_PROJECTION,
                "ExpressionAttributeNames": {"#status": "status"},
                "ConsistentRead": True,
            }
        }
        items: list[dict[str, Any]] = []
        for _ in range(_UNPROCESSED_ROUNDS):
            with dependency_call("dynamodb"):
                response = self._client.batch_get_item(RequestItems=request)
            items.extend(response.get("Responses", {}).get(self._table_name, []))
            request = dict(response.get("UnprocessedKeys") or {})
            if not request:
                return items
        # Throttled round after round: the next backstop pass will read them again.
        raise DependencyFailure("dynamodb", "UnprocessedKeys", transient=True)
