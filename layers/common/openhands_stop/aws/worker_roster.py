"""The workers alive, as items of the conversations table: one per worker process.

Each worker process (an *instance*: 12 random hex, new at every start) keeps one item,
``worker#<instance>``, whose ``beat`` is a counter it adds one to on a cadence: a proof of
life that holds no time, so no reader ever compares two hosts' clocks. A peer judges the
worker dead when the counter has not moved for a span of the *peer's own* monotonic clock,
and declares it with a write conditional on the very value it watched: a worker that beat in
between is never declared (tests/worker/test_liveness.py).

The items carry ``roster`` so the table's sparse ``workers`` index lists them in key order:
each worker reads only the next few after its own (a ring), so judging costs one small Query
per worker per beat, whatever the size of the fleet. No item has a ``status``: the stop
route reads them as no conversation, and its id pattern cannot even name them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from openhands_stop.aws.failures import dependency_call
from openhands_stop.constants import (
    INSTANCE_HEX_DIGITS,
    PARTITION_KEY,
    WORKER_ITEM_KEY_PREFIX,
    WORKERS_INDEX,
)
from openhands_stop.domain.errors import DependencyFailure

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ROSTER = "workers"
"""Every liveness item's ``roster``: the one partition of the ``workers`` index."""


def new_instance() -> str:
    return secrets.token_hex(INSTANCE_HEX_DIGITS // 2)


def member_key(instance: str) -> str:
    return f"{WORKER_ITEM_KEY_PREFIX}{instance}"


@dataclass(frozen=True)
class Member:
    """One worker's liveness item as a peer reads it."""

    instance: str
    # The counter exactly as stored (``None``: no counter). Only equality is ever asked of
    # it, so a value edited by hand (a fraction, ``inf``, text) is watched like any other.
    beat: dict[str, Any] | None
    dead: bool
    cancel_queue_url: str | None
    worker_id: str | None


class DynamoWorkerRoster:
    """UpdateItem, Query and DeleteItem on the liveness items: nothing else."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table_name = table_name

    def join(self, instance: str, *, worker_id: str, cancel_queue_url: str | None) -> None:
        """Create this instance's item (beat 0). Instances are never reused."""
        names = {"#roster": "roster"}
        values: dict[str, Any] = {
            ":roster": {"S": ROSTER},
            ":worker": {"S": worker_id[:256]},
            ":zero": {"N": "0"},
        }
        update = "SET #roster = :roster, worker_id = :worker, beat = :zero"
        if cancel_queue_url:
            update += ", cancel_queue_url = :queue"
            values[":queue"] = {"S": cancel_queue_url}
        with dependency_call("dynamodb"):
            self._client.update_item(
                TableName=self._table_name,
                Key={PARTITION_KEY: {"S": member_key(instance)}},
                UpdateExpression=update,
                ConditionExpression=f"attribute_not_exists({PARTITION_KEY})",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )

    def beat(self, instance: str) -> bool:
        """Add one to the counter; ``False`` when a peer declared this instance dead (or its
        item is gone): it must then end what it holds and join again as a new instance."""
        try:
            with dependency_call("dynamodb"):
                self._client.update_item(
                    TableName=self._table_name,
                    Key={PARTITION_KEY: {"S": member_key(instance)}},
                    UpdateExpression="ADD beat :one",
                    ConditionExpression="attribute_exists(beat) AND attribute_not_exists(dead)",
                    ExpressionAttributeValues={":one": {"N": "1"}},
                )
        except DependencyFailure as failure:
            if _refused(failure):
                return False
            if failure.detail == "ValidationException":
                # A counter edited into something ADD cannot add to: this instance cannot
                # prove it is alive any more, so it behaves as one declared dead.
                return False
            raise
        return True

    def successors(self, instance: str, count: int) -> list[Member]:
        """The items after this instance's in key order, wrapping around: the peers it
        judges. Dead items come back too (their clean-up is finished by whoever sees them)."""
        after = self._query(f"{PARTITION_KEY} > :me", member_key(instance), count)
        found = [m for m in after if m.instance != instance]
        if len(found) < count:
            seen = {m.instance for m in found}
            for member in self._query(None, None, count):
                if member.instance != instance and member.instance not in seen:
                    found.append(member)
        return found[:count]

    def _query(self, condition: str | None, start: str | None, count: int) -> list[Member]:
        values: dict[str, Any] = {":roster": {"S": ROSTER}}
        key_condition = "#roster = :roster"
        if condition is not None and start is not None:
            key_condition += f" AND {condition}"
            values[":me"] = {"S": start}
        with dependency_call("dynamodb"):
            response = self._client.query(
                TableName=self._table_name,
                IndexName=WORKERS_INDEX,
                KeyConditionExpression=key_condition,
                ExpressionAttributeNames={"#roster": "roster"},
                ExpressionAttributeValues=values,
                Limit=count,
            )
        return [m for m in map(member_from_item, response.get("Items", [])) if m is not None]

    def member(self, instance: str) -> Member | None:
        """One item, read strongly consistent; ``None`` when it does not exist."""
        with dependency_call("dynamodb"):
            response = self._client.get_item(
                TableName=self._table_name,
                Key={PARTITION_KEY: {"S": member_key(instance)}},
                ConsistentRead=True,
            )
        return member_from_item(response.get("Item"))

    def members(self, instances: list[str]) -> set[str]:
        """Which of these instances have an item (strongly consistent): for the start sweep."""
        found: set[str] = set()
        for start in range(0, len(instances), 100):
            keys = [{PARTITION_KEY: {"S": member_key(i)}} for i in instances[start : start + 100]]
            request: dict[str, Any] = {
                self._table_name: {
                    "Keys": keys,
                    "ProjectionExpression": PARTITION_KEY,
                    "ConsistentRead": True,
                }
            }
            while request:
                with dependency_call("dynamodb"):
                    response = self._client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self._table_name, []):
                    key = item.get(PARTITION_KEY, {}).get("S", "")
                    found.add(key.removeprefix(WORKER_ITEM_KEY_PREFIX))
                request = dict(response.get("UnprocessedKeys") or {})
        return found

    def declare_dead(
        self, instance: str, *, observed_beat: dict[str, Any] | None, judge: str
    ) -> bool:
        """Mark the instance dead, only if its counter is still the one watched (and nobody
        declared it yet): ``True`` when the item is now dead, by this call or another's."""
        values: dict[str, Any] = {":judge": {"S": judge}}
        if observed_beat is None:
            unchanged = "attribute_not_exists(beat)"
        else:
            unchanged = "beat = :beat"
            values[":beat"] = observed_beat
        try:
            with dependency_call("dynamodb"):
                self._client.update_item(
                    TableName=self._table_name,
                    Key={PARTITION_KEY: {"S": member_key(instance)}},
                    UpdateExpression="SET dead = :judge",
                    ConditionExpression=(
                        f"attribute_exists({PARTITION_KEY}) AND {unchanged} "
                        "AND attribute_not_exists(dead)"
                    ),
                    ExpressionAttributeValues=values,
                )
        except DependencyFailure as failure:
            if _refused(failure):
                current = self.member(instance)
                return current is not None and current.dead
            raise
        return True

    def leave(self, instance: str) -> None:
        """Delete the item (a clean shutdown, or a dead peer's clean-up finished)."""
        with dependency_call("dynamodb"):
            self._client.delete_item(
                TableName=self._table_name, Key={PARTITION_KEY: {"S": member_key(instance)}}
            )

    def mark_left(self, instance: str, *, by: str) -> None:
        """Mark one's own former instance dead (it made a new one): peers finish its
        clean-up (the release of anything still recorded under it) and delete it."""
        with dependency_call("dynamodb"):
            self._client.update_item(
                TableName=self._table_name,
                Key={PARTITION_KEY: {"S": member_key(instance)}},
                UpdateExpression="SET dead = :by",
                ExpressionAttributeValues={":by": {"S": by}},
            )


def _refused(failure: DependencyFailure) -> bool:
    return failure.detail == "ConditionalCheckFailedException"


def member_from_item(item: dict[str, Any] | None) -> Member | None:
    """A liveness item as a ``Member``; ``None`` for anything that is not one."""
    if not item:
        return None
    key = item.get(PARTITION_KEY, {}).get("S")
    if not isinstance(key, str) or not key.startswith(WORKER_ITEM_KEY_PREFIX):
        return None
    return Member(
        instance=key.removeprefix(WORKER_ITEM_KEY_PREFIX),
        beat=item["beat"] if isinstance(item.get("beat"), dict) else None,
        dead="dead" in item,
        cancel_queue_url=_string(item.get("cancel_queue_url")),
        worker_id=_string(item.get("worker_id")),
    )


def _string(value: Any) -> str | None:
    text = value.get("S") if isinstance(value, dict) else None
    return text if isinstance(text, str) and text else None
