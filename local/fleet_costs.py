"""What ``make fleet``'s AWS requests cost: counted by kind in every process, priced in one place.

Each agent host (``local.fleet_host``) and the route (in ``local.fleet``'s process) install a
``RequestCounter`` on the package's one botocore session (``openhands_stop.aws.clients``)
before any client is made: botocore's ``before-parameter-build`` hook labels each call
(service, operation, and what it is for: a liveness item or a row, an index, a worker's queue
or the stack's), ``before-call`` counts it, ``after-call`` adds the read units of what a read
returned (DynamoDB's rounding: 4 KB per unit, half for an eventually consistent read or any
index Query). Writes are counted as one unit each: every item here is far below 1 KB (the
run measures the largest row).

``render_costs`` turns the counts of a run into the generated section of docs/performance.md:
requests per worker-minute and per run-hour by kind, and a cost model at the worker's default
settings, priced with ``PRICES``.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

COSTS_BEGIN = "<!-- fleet-costs:begin -->"
COSTS_END = "<!-- fleet-costs:end -->"

PRICES_AS_OF = (
    "November 2024 (AWS's public price pages as known to this project: DynamoDB on-demand "
    "after its November 2024 price cut; not re-checked online, which this project cannot reach)"
)
PRICES = {
    "dynamodb_write_unit": 0.625 / 1e6,  # on-demand, per write request unit
    "dynamodb_read_unit": 0.125 / 1e6,  # on-demand, per read request unit
    "sqs_fifo_request": 0.50 / 1e6,  # every queue here is FIFO
    "sqs_standard_request": 0.40 / 1e6,  # for comparison only
    "lambda_arm64_gb_second": 0.0000133334,  # Lambda duration, arm64, first pricing tier
}
"""AWS on-demand list prices, us-east-1 (``PRICES_AS_OF``): DynamoDB on-demand $0.625 per
million write request units and $0.125 per million read request units (a strongly consistent
read or a Query of <= 4 KB is 1 unit, an eventually consistent one 0.5); SQS $0.40 per million
requests (standard), $0.50 (FIFO); Lambda duration on arm64 $0.0000133334 per GB-second (the
first 7.5 billion GB-seconds a month; ``make bench``'s confirmed-stop section prices the wait
with it); free tiers ignored."""

MONTH_SECONDS = 30 * 24 * 3600
WORKER_QUEUE_MARK = "_cancel-worker-"  # in every worker queue's name (aws/cancel_queue.py)
BACKSTOP_KIND = "dynamodb.Query runs-by-worker (backstop)"


def _item_bytes(item: dict[str, Any]) -> int:
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
        return 3 + _item_bytes(inner)
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
            sizes = [_item_bytes(parsed.get("Item") or {})]
            units = factor * max(1, math.ceil(sizes[0] / 4096))
        elif model.name == "BatchGetItem":
            sizes = [
                _item_bytes(item)
                for items in parsed.get("Responses", {}).values()
                for item in items
            ]
            units = factor * sum(max(1, math.ceil(size / 4096)) for size in sizes)
        else:
            sizes = [_item_bytes(item) for item in parsed.get("Items", [])]
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


@dataclass
class Costs:
    """A run's counts, gathered by ``local.fleet``."""

    workers: dict[str, dict[str, float]] = field(default_factory=dict)  # summed over hosts
    worker_minutes: float = 0.0  # of the hosts that reported (the killed one cannot)
    run_hours: float = 0.0  # loops running on those hosts, summed
    route: dict[str, dict[str, float]] = field(default_factory=dict)
    stops: int = 0  # stops the route answered
    runs: int = 0  # runs started on the reporting hosts
    idle: dict[str, dict[str, float]] = field(default_factory=dict)  # the idle window's
    idle_run_seconds: float = 0.0
    idle_runs_per_worker: float = 0.0
    idle_backstop_seconds: float = 0.0
    largest_row_bytes: int = 0

    def per_worker_minute(self, kind: str) -> float:
        count = self.workers.get("requests", {}).get(kind, 0)
        return count / self.worker_minutes if self.worker_minutes else 0.0

    def per_run_hour(self, kind: str) -> float:
        count = self.workers.get("requests", {}).get(kind, 0)
        return count / self.run_hours if self.run_hours else 0.0

    def backstop_units_per_idle_run_hour(self, backstop_seconds: float | None = None) -> float:
        """The backstop's read units per idle run-hour, from its passes in the idle window
        (units and runs shown per Query), at ``backstop_seconds`` (the default interval,
        say) or the window's own interval."""
        queries = self.idle.get("requests", {}).get(BACKSTOP_KIND, 0)
        units = self.idle.get("read_units", {}).get(BACKSTOP_KIND, 0.0)
        runs = self.idle.get("items", {}).get(BACKSTOP_KIND, 0)
        if not queries or not runs:
            return math.nan
        # Per pass: its units, for the runs it showed; passes per hour at the interval.
        interval = backstop_seconds or self.idle_backstop_seconds
        return (units / queries) * (3600 / interval) / (runs / queries)

    def backstop_bytes_per_run(self) -> float:
        items = self.idle.get("items", {}).get(BACKSTOP_KIND, 0)
        size = self.idle.get("bytes", {}).get(BACKSTOP_KIND, 0)
        return size / items if items else 200.0


def _defaults() -> dict[str, float]:
    from openhands_stop.worker import WorkerSettings

    fields = WorkerSettings.model_fields
    names = {
        "heartbeat": "queue_heartbeat_seconds",
        "orphan": "orphan_queue_seconds",
        "backstop": "backstop_seconds",
        "wait": "wait_time_seconds",
    }
    return {short: float(fields[name].default) for short, name in names.items()}


def _money(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.01 else f"${value:,.4f}"


def _unit_price(kind: str, read_units_per_call: float) -> float:
    if kind.startswith("sqs."):
        return PRICES["sqs_fifo_request"]
    if kind.startswith("dynamodb.") and any(
        op in kind for op in ("UpdateItem", "PutItem", "DeleteItem", "TransactWrite")
    ):
        return PRICES["dynamodb_write_unit"]
    return PRICES["dynamodb_read_unit"] * read_units_per_call


def liveness_per_worker_month() -> tuple[dict[str, float], float]:
    """Requests per worker per month at the default settings, and their dollars."""
    d = _defaults()
    beats = MONTH_SECONDS / d["heartbeat"]
    polls = 2 * MONTH_SECONDS / d["wait"]  # its own queue and the stack's, empty long polls
    requests = {
        "dynamodb.UpdateItem liveness (beat)": beats,
        "dynamodb.Query workers (judge)": beats,
        "sqs.ReceiveMessage (2 long polls)": polls,
    }
    dollars = (
        beats * PRICES["dynamodb_write_unit"]
        + beats * 0.5 * PRICES["dynamodb_read_unit"]
        + polls * PRICES["sqs_fifo_request"]
    )
    return requests, dollars


def backstop_per_thousand_runs(runs_per_worker: int, row_bytes: float) -> tuple[float, float]:
    """Backstop Queries and read units per month for 1,000 concurrent idle runs held
    ``runs_per_worker`` to a worker, at the default interval."""
    d = _defaults()
    workers = math.ceil(1000 / runs_per_worker)
    queries = workers * MONTH_SECONDS / d["backstop"]
    units = queries * 0.5 * max(1, math.ceil(runs_per_worker * row_bytes / 4096))
    return queries, units


def stop_requests(costs: Costs) -> dict[str, float]:
    """Requests one stop costs, by kind: the route's (measured per stop answered) and the
    worker's share that a stop causes (the cancel's receive, delete and the row's end)."""
    per_stop: dict[str, float] = {}
    if costs.stops:
        for kind, count in costs.route.get("requests", {}).items():
            per_stop[f"route: {kind}"] = count / costs.stops
    requests = costs.workers.get("requests", {})
    if costs.runs:
        deletes = requests.get("sqs.DeleteMessage worker", 0) + requests.get(
            "sqs.DeleteMessage stack", 0
        )
        per_stop["worker: sqs.ReceiveMessage (the one that carried it)"] = 1.0
        per_stop["worker: sqs.DeleteMessage"] = deletes / max(costs.stops, 1)
        per_stop["worker: dynamodb.UpdateItem run_ended"] = (
            requests.get("dynamodb.UpdateItem run_ended", 0) / costs.runs
        )
    return per_stop


def _stop_dollars(costs: Costs, per_stop: dict[str, float]) -> float:
    total = 0.0
    for label, count in per_stop.items():
        kind = label.split(": ", 1)[1]
        units = 1.0
        route_units = costs.route.get("read_units", {})
        route_calls = costs.route.get("requests", {})
        if label.startswith("route: ") and route_calls.get(kind):
            units = route_units.get(kind, route_calls[kind]) / route_calls[kind]
        total += count * _unit_price(kind, units)
    return total


def render_costs(costs: Costs, *, commit: str, generated: str, fleet_settings: str) -> str:
    """The generated cost section of docs/performance.md, markers included."""
    d = _defaults()
    kinds = sorted(costs.workers.get("requests", {}))
    measured = [
        f"| {kind} | {costs.per_worker_minute(kind):,.1f} | {costs.per_run_hour(kind):,.0f} |"
        for kind in kinds
    ]
    total_minute = sum(costs.per_worker_minute(kind) for kind in kinds)
    per_stop = stop_requests(costs)
    stop_rows = [f"| {label} | {count:.2f} |" for label, count in per_stop.items()]
    stop_total = sum(per_stop.values())
    stop_dollars = _stop_dollars(costs, per_stop) * 1e6
    live_requests, live_dollars = liveness_per_worker_month()
    live_total = sum(live_requests.values())
    row_bytes = costs.backstop_bytes_per_run()
    backstop_rows = []
    for per_worker in (1, 5, 10, 50, 100):
        queries, units = backstop_per_thousand_runs(per_worker, row_bytes)
        per_run_hour = units / (1000 * MONTH_SECONDS / 3600)
        backstop_rows.append(
            f"| {per_worker} | {math.ceil(1000 / per_worker):,} | {queries / 1e6:,.2f} M | "
            f"{units / 1e6:,.2f} M | {_money(units * PRICES['dynamodb_read_unit'])} | "
            f"{per_run_hour:,.1f} | {'ok' if per_run_hour <= 72 else 'over 72'} |"
        )
    measured_idle = costs.backstop_units_per_idle_run_hour()
    at_default = costs.backstop_units_per_idle_run_hour(d["backstop"])
    lines = [
        COSTS_BEGIN,
        "## What the requests cost (generated by `make fleet`)",
        "",
        "<!-- Generated by `make fleet` (local/fleet_costs.py); replaced on each run. -->",
        "",
        f"Generated {generated} from commit `{commit or 'unknown'}`. Requests are counted by "
        "kind in every worker process and in the route with a botocore `before-call` hook "
        "(`local/fleet_costs.py`); read units from the size of what each read returned. "
        f"Prices: AWS on-demand list prices for us-east-1 as of {PRICES_AS_OF}: DynamoDB "
        "$0.625 per million write request units, $0.125 per million read request units (a "
        "strongly consistent read or a Query of up to 4 KB is 1 unit, an eventually "
        "consistent one, every index Query included, 0.5); SQS $0.50 per million FIFO "
        "requests ($0.40 standard; every queue here is FIFO). Free tiers ignored. Rows are "
        f"under 1 KB (largest seen: {costs.largest_row_bytes} bytes), so each write is 1 "
        "unit.",
        "",
        f"### Measured in the fleet run ({fleet_settings})",
        "",
        f"{costs.worker_minutes:,.1f} worker-minutes and {costs.run_hours:,.3f} run-hours on "
        "the workers that reported (the killed one cannot); loops ran 0.2 to 1.5 s each, so "
        "per run-hour figures here are dominated by starting and stopping, not by holding.",
        "",
        "| Kind (worker processes) | Per worker-minute | Per run-hour |",
        "|---|---|---|",
        *measured,
        f"| **all** | **{total_minute:,.1f}** | |",
        "",
        f"Backstop in the idle window ({costs.idle_runs_per_worker:g} idle runs per worker, "
        f"`BACKSTOP_SECONDS={costs.idle_backstop_seconds:g}`): "
        f"{measured_idle:,.1f} read units per idle run-hour; at the default "
        f"`BACKSTOP_SECONDS={d['backstop']:g}`: **{at_default:,.1f}** (target <= 72; it was "
        "720 when the backstop read every held row strongly consistent every 5 s). "
        f"An index entry of a held run is about {row_bytes:,.0f} bytes.",
        "",
        "### Per million stops",
        "",
        "| Requests per stop | Count |",
        "|---|---|",
        *stop_rows,
        f"| **all** | **{stop_total:.2f}** |",
        "",
        f"A million stops: about {stop_total:,.1f} million requests, "
        f"**{_money(stop_dollars)}**. (Starting a run, for comparison, is a register and a "
        "claim: 2 writes.)",
        "",
        "### Liveness, per month, at the default settings",
        "",
        f"`QUEUE_HEARTBEAT_SECONDS={d['heartbeat']:g}`, `WAIT_TIME_SECONDS={d['wait']:g}`: "
        "each worker, every beat, one UpdateItem of its item and one Query of the `workers` "
        "index (its successors: a few small items, 0.5 unit); two long polls in turn (its "
        "own queue and the stack's). Linear in workers: no worker reads more as the fleet "
        f"grows. Per worker: {live_total / 1e6:,.2f} M requests, {_money(live_dollars)} a "
        "month.",
        "",
        "| Workers | Requests per month | Requests per minute (fleet) | Dollars per month |",
        "|---|---|---|---|",
        *(
            f"| {n:,} | {n * live_total / 1e6:,.1f} M | "
            f"{n * live_total / (MONTH_SECONDS / 60):,.0f} | {_money(n * live_dollars)} |"
            for n in (10, 100, 1000)
        ),
        "",
        "### The backstop, per 1,000 concurrent runs per month, at the default settings",
        "",
        f"`BACKSTOP_SECONDS={d['backstop']:g}`: one Query of the `runs-by-worker` index per "
        "pass per worker holding runs (nothing for a worker holding none), its entries "
        "summed and rounded up to 4 KB, half a unit each. So its cost grows with workers, "
        "and per run falls as a worker holds more. (AWS's index is eventually consistent: a "
        "run the Query does not show yet, a claim of the last second, costs one strongly "
        "consistent read more; moto's index never lags, so the run does not see those.)",
        "",
        "| Runs per worker | Workers | Queries | Read units | Dollars | Units per idle "
        "run-hour | <= 72 |",
        "|---|---|---|---|---|---|---|",
        *backstop_rows,
        "",
        "At one run per worker the Query is the floor of half a unit per pass (360 units per "
        "run-hour); from five runs per worker on it is under 72. A host running one "
        "conversation at a time can raise `BACKSTOP_SECONDS` (a lost cancel waits grace + one "
        "interval), or accept that cost: 1,000 such workers pay "
        f"{_money(backstop_per_thousand_runs(1, row_bytes)[1] * PRICES['dynamodb_read_unit'])}"
        " a month for it.",
        COSTS_END,
    ]
    return "\n".join(lines) + "\n"


def splice_costs(document: str, section: str) -> str:
    """Replace the cost section (or append it) and keep the rest of the document."""
    begin = document.find(COSTS_BEGIN)
    end = document.find(COSTS_END, begin)
    if begin < 0 or end < 0:
        return document.rstrip("\n") + "\n\n" + section
    end += len(COSTS_END)
    if document.startswith("\n", end):
        end += 1
    return document[:begin] + section + document[end:]
