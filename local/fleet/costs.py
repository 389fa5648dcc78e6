"""What ``make fleet``'s AWS requests cost, priced in one place (``PRICES``).

The requests are counted by kind in every process (``local.fleet.counter``) and gathered in
``Costs``. ``render_costs`` turns the counts of a run into the generated section of
docs/performance.md: requests per worker-minute and per run-hour by kind, and a cost model at
the worker's default settings, priced with ``PRICES``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from local import doc_sections

COSTS = doc_sections.Markers("<!-- fleet-costs:begin -->", "<!-- fleet-costs:end -->")

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
BACKSTOP_KIND = "dynamodb.Query runs-by-worker (backstop)"


@dataclass
class Costs:
    """A run's counts, gathered by ``local.fleet.tally`` and ``local.fleet.shutdown``."""

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


def defaults() -> dict[str, float]:
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
    d = defaults()
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
    d = defaults()
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
    d = defaults()
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
        COSTS.begin,
        "## What the requests cost (generated by `make fleet`)",
        "",
        "<!-- Generated by `make fleet` (local/fleet/costs.py); replaced on each run. -->",
        "",
        f"Generated {generated} from commit `{commit or 'unknown'}`. Requests are counted by "
        "kind in every worker process and in the route with a botocore `before-call` hook "
        "(`local/fleet/costs.py`); read units from the size of what each read returned. "
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
        COSTS.end,
    ]
    return "\n".join(lines) + "\n"


def splice_costs(document: str, section: str) -> str:
    """Replace the cost section (or append it) and keep the rest of the document."""
    return doc_sections.splice(document, COSTS, section)
