"""The reads of a confirmed stop: a row's run end, and whether a worker is known dead.

Two ``GetItem``s, strongly consistent, projected to the few attributes they need (the stop
function's IAM grants ``GetItem`` on the table for them and nothing more).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from openhands_stop.aws.failures import dependency_call
from openhands_stop.aws.worker_roster import member_key
from openhands_stop.constants import PARTITION_KEY
from openhands_stop.domain.models import RunEnd
from openhands_stop.domain.ports import RunEndView

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_RUN_ENDS = frozenset(end.value for end in RunEnd)


class DynamoRunEnds:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table_name = table_name

    def run_end(self, conversation_id: str) -> RunEndView | None:
        item = self._get(conversation_id, "run_id, loop_stopped_via")
        if item is None:
            return None
        via = _string(item.get("loop_stopped_via"))
        return RunEndView(
            run_id=_string(item.get("run_id")),
            loop_stopped_via=RunEnd(via) if via in _RUN_ENDS else None,
        )

    def worker_gone(self, worker_instance: str) -> bool:
        item = self._get(member_key(worker_instance), "dead")
        return item is None or "dead" in item

    def _get(self, key: str, projection: str) -> dict[str, Any] | None:
        with dependency_call("dynamodb"):
            response = self._client.get_item(
                TableName=self._table_name,
                Key={PARTITION_KEY: {"S": key}},
                ConsistentRead=True,
                ProjectionExpression=f"{PARTITION_KEY}, {projection}",
            )
        item: dict[str, Any] | None = response.get("Item")
        return item


def _string(value: Any) -> str | None:
    text = value.get("S") if isinstance(value, dict) else None
    return text if isinstance(text, str) and text else None
