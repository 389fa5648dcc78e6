"""The conversations table as an agent worker sees it: the run lifecycle, and the re-reads."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from openhands_stop.aws.conversation_table import (
    conditional_update,
    held_run_from_item,
    record_from_item,
    timestamp,
)
from openhands_stop.aws.failures import dependency_call
from openhands_stop.constants import PARTITION_KEY, RUNS_BY_WORKER_INDEX
from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.domain.models import ConversationRecord, ConversationStatus, RunEnd
from openhands_stop.domain.ports import ClaimResult, HeldRun

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = [
    "BATCH_GET_MAX_KEYS",
    "ClaimResult",
    "DynamoClaimTable",
    "HeldRun",
]

BATCH_GET_MAX_KEYS = 100
"""BatchGetItem's limit on keys per call."""

_UNPROCESSED_ROUNDS = 5

_log = logging.getLogger("openhands_stop.rows")

_RUN_FIELDS = (
    "run_id, worker_id, worker_instance, cancel_queue_url, claimed_at, stop_id, "
    "stop_request_id, stopped_at, stopped_from, stopped_version, stop_source_ip, "
    "stop_user_agent, stop_reason, loop_stopped_at, loop_stopped_via"
)

_REGISTER: dict[str, Any] = {
    # A restart forgets the previous run entirely: its late cancel names a run that is no
    # longer the row's, so it can stop nothing (tests/worker/test_runs.py).
    "UpdateExpression": (
        "SET #status = :starting, registered_at = :now, updated_at = :now "
        f"REMOVE {_RUN_FIELDS} ADD version :one"
    ),
    # New, stopped, or already waiting to start; never a RUNNING one (stop it first).
    "ConditionExpression": "attribute_not_exists(#status) OR #status IN (:stopped, :starting)",
    "ExpressionAttributeNames": {"#status": "status"},
    "ReturnValues": "ALL_NEW",
    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
}

_CLAIM: dict[str, Any] = {
    "UpdateExpression": (
        "SET #status = :running, run_id = :run, worker_id = :worker, "
        "worker_instance = :instance, cancel_queue_url = :queue, claimed_at = :now, "
        "updated_at = :now REMOVE loop_stopped_at, loop_stopped_via ADD version :one"
    ),
    # Only a STARTING conversation can be claimed: a missing row has no status, and a STOPPED
    # one was stopped before its loop started, so the stop wins. A retry of our own claim
    # (the first attempt succeeded but its answer was lost) finds it RUNNING with our run.
    "ConditionExpression": "#status = :starting OR (#status = :running AND run_id = :run)",
    "ExpressionAttributeNames": {"#status": "status"},
    "ReturnValues": "ALL_NEW",
    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
}

# A run's end, on its row: STOPPED with when and how, and out of the runs-by-worker index.
_END_RUN = (
    "SET #status = :stopped, loop_stopped_at = :now, loop_stopped_via = :via, "
    "updated_at = :now REMOVE worker_instance ADD version :one"
)

_RUN_ENDED: dict[str, Any] = {
    # STOPPED stays STOPPED (the stop carried out); RUNNING becomes STOPPED (the loop ended
    # by itself), so the table never says RUNNING for a loop that is gone. Only while the
    # row's run is still this one and its end is not yet recorded: a newer run's row is never
    # touched, and the first end recorded (a peer's release, say) is kept. The row leaves the
    # runs-by-worker index (no ``worker_instance``).
    "UpdateExpression": _END_RUN,
    "ConditionExpression": (
        "run_id = :run AND #status IN (:running, :stopped) "
        "AND attribute_not_exists(loop_stopped_at)"
    ),
    "ExpressionAttributeNames": {"#status": "status"},
    "ReturnValues": "NONE",
    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
}

_RELEASE_LOST: dict[str, Any] = {
    # A dead worker's run: only while the row still names that worker and that run, and its
    # loop's end is not recorded; a RUNNING row becomes STOPPED, a STOPPED one (a stop whose
    # cancel went to the dead worker's queue) gets its end recorded.
    "UpdateExpression": _END_RUN,
    "ConditionExpression": (
        "worker_instance = :instance AND run_id = :run AND #status IN (:running, :stopped) "
        "AND attribute_not_exists(loop_stopped_at)"
    ),
    "ExpressionAttributeNames": {"#status": "status"},
    "ReturnValues": "NONE",
    "ReturnValuesOnConditionCheckFailure": "NONE",
}

_MOVE_RUN: dict[str, Any] = {
    # A worker that had to make a new queue (and so a new instance) moves its runs there.
    "UpdateExpression": (
        "SET worker_instance = :new_instance, cancel_queue_url = :queue, updated_at = :now "
        "ADD version :one"
    ),
    "ConditionExpression": (
        "worker_instance = :instance AND run_id = :run AND attribute_not_exists(loop_stopped_at)"
    ),
    "ReturnValues": "NONE",
    "ReturnValuesOnConditionCheckFailure": "NONE",
}

# What the backstop needs of a row: its run, enough to cancel, and to log the stop's latency.
_BACKSTOP_PROJECTION = (
    "conversation_id, #status, run_id, worker_instance, stop_id, stop_request_id, stopped_at, "
    "claimed_at, loop_stopped_at"
)


class DynamoClaimTable:
    """``ClaimTable`` (domain.ports, where each call's meaning is said) on DynamoDB:
    UpdateItem for the lifecycle, Query for a worker's runs, BatchGetItem to re-read."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table_name = table_name

    def register(self, conversation_id: str, *, now: datetime) -> ClaimResult:
        registered, record = conditional_update(
            self._client,
            self._table_name,
            conversation_id,
            {
                ":starting": {"S": ConversationStatus.STARTING.value},
                ":stopped": {"S": ConversationStatus.STOPPED.value},
                ":now": {"S": timestamp(now)},
                ":one": {"N": "1"},
            },
            _REGISTER,
        )
        return ClaimResult(claimed=registered, record=record)

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
        claimed, record = conditional_update(
            self._client,
            self._table_name,
            conversation_id,
            {
                ":running": {"S": ConversationStatus.RUNNING.value},
                ":starting": {"S": ConversationStatus.STARTING.value},
                ":run": {"S": run_id},
                ":worker": {"S": worker_id},
                ":instance": {"S": worker_instance},
                ":queue": {"S": cancel_queue_url},
                ":now": {"S": timestamp(now)},
                ":one": {"N": "1"},
            },
            _CLAIM,
        )
        return ClaimResult(claimed=claimed, record=record)

    def record_run_ended(
        self, conversation_id: str, run_id: str, *, via: RunEnd, now: datetime
    ) -> bool:
        applied, record = conditional_update(
            self._client,
            self._table_name,
            conversation_id,
            {
                ":stopped": {"S": ConversationStatus.STOPPED.value},
                ":running": {"S": ConversationStatus.RUNNING.value},
                ":run": {"S": run_id},
                ":via": {"S": via.value},
                ":now": {"S": timestamp(now)},
                ":one": {"N": "1"},
            },
            _RUN_ENDED,
        )
        return applied or (
            record is not None and record.run_id == run_id and record.loop_stopped_at is not None
        )

    def release_lost_run(
        self, conversation_id: str, run_id: str, *, worker_instance: str, now: datetime
    ) -> bool:
        applied, _ = conditional_update(
            self._client,
            self._table_name,
            conversation_id,
            {
                ":stopped": {"S": ConversationStatus.STOPPED.value},
                ":running": {"S": ConversationStatus.RUNNING.value},
                ":instance": {"S": worker_instance},
                ":run": {"S": run_id},
                ":via": {"S": RunEnd.WORKER_LOST.value},
                ":now": {"S": timestamp(now)},
                ":one": {"N": "1"},
            },
            _RELEASE_LOST,
        )
        return applied

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
        applied, _ = conditional_update(
            self._client,
            self._table_name,
            conversation_id,
            {
                ":instance": {"S": worker_instance},
                ":new_instance": {"S": to_instance},
                ":run": {"S": run_id},
                ":queue": {"S": cancel_queue_url},
                ":now": {"S": timestamp(now)},
                ":one": {"N": "1"},
            },
            _MOVE_RUN,
        )
        return applied

    def runs_of(self, worker_instance: str) -> list[HeldRun]:
        held: list[HeldRun] = []
        request: dict[str, Any] = {
            "TableName": self._table_name,
            "IndexName": RUNS_BY_WORKER_INDEX,
            "KeyConditionExpression": "worker_instance = :instance",
            "ExpressionAttributeValues": {":instance": {"S": worker_instance}},
        }
        while True:
            with dependency_call("dynamodb"):
                response = self._client.query(**request)
            for item in response.get("Items", []):
                row = held_run_from_item(item)
                if row is not None:
                    held.append(row)
            last = response.get("LastEvaluatedKey")
            if not last:
                return held
            request["ExclusiveStartKey"] = last

    def records(self, conversation_ids: Iterable[str]) -> dict[str, ConversationRecord]:
        ids = sorted(set(conversation_ids))
        found: dict[str, ConversationRecord] = {}
        for start in range(0, len(ids), BATCH_GET_MAX_KEYS):
            for item in self._batch_get(ids[start : start + BATCH_GET_MAX_KEYS]):
                try:
                    record = record_from_item(item)
                except Exception as error:
                    _log.warning("unreadable_row error=%s", type(error).__name__)
                    continue
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
