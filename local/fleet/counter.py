"""Counting one process's AWS requests by kind, with the read units its reads consumed.

Each agent host (``local.fleet.host``), the fleet's route (in ``local.fleet``'s process) and
``make bench``'s confirmed-stop routes install a ``RequestCounter`` on the package's one
botocore session (``openhands_stop.aws.clients``) before any client is made: botocore's
``before-parameter-build`` hook labels each call (service, operation, and what it is for: a
liveness item or a row, an index, a worker's queue or the stack's), ``before-call`` counts
it, ``after-call`` adds the read units of what a read returned (DynamoDB's rounding: 4 KB per
unit, half for an eventually consistent read or any index Query). Writes are counted as one
unit each: every item here is far below 1 KB (the fleet run measures the largest row).
``local.fleet.costs`` prices the counts.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

WORKER_QUEUE_MARK = "_cancel-worker-"  # in every worker queue's name (aws/cancel_queue.py)


def item_bytes(item: dict[str, Any]) -> int:
    """DynamoDB's size of an item in the wire format: names plus values."""
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


def _value_bytes(value: Any) -> int:  # noqa: PLR0911 - one answer per DynamoDB type
    if not isinstance(value, dict) or len(value) != 1:
        return 1
    ((kind, inner),) = value.items()
    if kind in {"S", "B"}:
        return len(str(inner).encode())
    if kind == "N":
        return len(str(inner).strip("-").replace(".", "").lstrip("0")) // 2 + 2
    if kind in {"SS", "NS", "BS"}:
        return sum(len(str(element).encode()) for element in inner)
    if kind == "M":
        return 3 + item_bytes(inner)
    if kind == "L":
        return 3 + sum(1 + _value_bytes(element) for element in inner)
    return 1


def _label(  # noqa: PLR0911
    service: str,
    operation: str,
    params: dict[str, Any],
    own_instance: Callable[[], str] | None = None,
) -> str:
    """The kind of one call: operation, plus what it is for."""
    kind = f"{service}.{operation}"
    if service == "dynamodb":
        key = str(params.get("Key", {}).get("conversation_id", {}).get("S", ""))
        if operation == "Query" and params.get("IndexName") == "runs-by-worker":
            named = params.get("ExpressionAttributeValues", {}).get(":instance", {}).get("S")
            whose = "backstop" if own_instance is None or named == own_instance() else "clean-up"
            return f"{kind} runs-by-worker ({whose})"
        if operation == "Query":
            return f"{kind} {params.get('IndexName', 'table')}"
        if operation in {"UpdateItem", "DeleteItem"} and key.startswith("worker#"):
            return f"{kind} liveness"
        if operation == "UpdateItem":
            values = params.get("ExpressionAttributeValues", {})
            for marker, purpose in (
                (":new_instance", "move_run"),
                (":worker", "claim"),
                (":instance", "release_lost"),
                (":via", "run_ended"),
            ):
                if marker in values:
                    return f"{kind} {purpose}"
            if "registered_at" in str(params.get("UpdateExpression", "")):
                return f"{kind} register"
            return f"{kind} row"
        return kind
    if service == "sqs":
        url = str(params.get("QueueUrl", ""))
        if url:
            return f"{kind} {'worker' if WORKER_QUEUE_MARK in url else 'stack'}"
    return kind


class RequestCounter:
    """Counts one process's AWS requests by kind, with the read units reads consumed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.read_units: dict[str, float] = {}
        self.items_returned: Counter[str] = Counter()
        self.bytes_returned: Counter[str] = Counter()
        self.own_instance: Callable[[], str] | None = None  # tells the backstop's Query apart

    def install(self, session: Any) -> None:
        """Register on a botocore session: clients made from it afterwards are counted."""
        session.register("before-parameter-build", self._before_build)
        session.register("before-call", self._before_call)
        session.register("after-call", self._after_call)

    def _before_build(self, params: dict[str, Any], model: Any, context: Any, **_: Any) -> None:
        service = model.service_model.service_name
        consistent = bool(params.get("ConsistentRead")) and "IndexName" not in params
        if model.name == "BatchGetItem":
            consistent = all(
                bool(request.get("ConsistentRead"))
                for request in params.get("RequestItems", {}).values()
            )
        label = _label(service, model.name, params, self.own_instance)
        context["fleet_kind"] = (label, consistent)

    def _before_call(self, model: Any, context: Any, **_: Any) -> None:
        kind, _consistent = context.get("fleet_kind", (model.name, False))
        with self._lock:
            self.requests[kind] += 1

    def _after_call(self, parsed: Any, model: Any, context: Any, **_: Any) -> None:
        if model.name not in {"Query", "GetItem", "BatchGetItem", "Scan"}:
            return
        kind, consistent = context.get("fleet_kind", (model.name, False))
        if not isinstance(parsed, dict):
            return
        factor = 1.0 if consistent else 0.5
        if model.name == "GetItem":
            sizes = [item_bytes(parsed.get("Item") or {})]
            units = factor * max(1, math.ceil(sizes[0] / 4096))
        elif model.name == "BatchGetItem":
            sizes = [
                item_bytes(item) for items in parsed.get("Responses", {}).values() for item in items
            ]
            units = factor * sum(max(1, math.ceil(size / 4096)) for size in sizes)
        else:
            sizes = [item_bytes(item) for item in parsed.get("Items", [])]
            units = factor * max(1, math.ceil(sum(sizes) / 4096))
        with self._lock:
            self.read_units[kind] = self.read_units.get(kind, 0.0) + units
            self.items_returned[kind] += len(sizes) if model.name != "GetItem" else 1
            self.bytes_returned[kind] += sum(sizes)

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "read_units": dict(self.read_units),
                "items": dict(self.items_returned),
                "bytes": dict(self.bytes_returned),
            }


def add(total: dict[str, dict[str, float]], part: dict[str, Any]) -> None:
    """Sum a snapshot into ``total`` (both shaped as ``snapshot()``)."""
    for section, values in part.items():
        if isinstance(values, dict):
            into = total.setdefault(section, {})
            for kind, value in values.items():
                into[kind] = into.get(kind, 0) + value


def subtract(after: dict[str, Any], before: dict[str, Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for section, values in after.items():
        earlier = before.get(section, {})
        out[section] = {k: v - earlier.get(k, 0) for k, v in values.items()}
    return out
