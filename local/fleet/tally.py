"""Counting a fleet run once it is over: its runs by how they ended, the rows, the latencies,
the wrong kills, liveness as the workers logged it, and the AWS requests of every host."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import TYPE_CHECKING, Any

from local.fleet import counter
from local.fleet.lines import wall

if TYPE_CHECKING:
    from local.fleet.result import FleetResult, TrackedRun
    from local.fleet.scenario import Fleet

STAMP_SLACK_SECONDS = 0.002
"""Log lines are stamped to the millisecond: an end stamped this much before the stop was
sent can still be that stop's doing."""


def wrong_kill(document: dict[str, Any], run: TrackedRun | None) -> str | None:
    """Why this line telling of a loop's end is a wrong kill, or None when a stop had been
    sent for its run before it ended."""
    if run is None:
        return "a run the harness never started"
    if run.stop_sent_at is None:
        return "no stop was ever sent for it"
    if wall(document) < run.stop_sent_at - STAMP_SLACK_SECONDS:
        return "it ended before its stop was sent"
    return None


def _percentile(ordered: list[float], share: float) -> float:
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def tally(fleet: Fleet) -> None:  # noqa: PLR0912 - one pass over the runs, each kind counted
    """Fill the fleet's result from what the run did and what the processes wrote."""
    result, faults = fleet.result, fleet.faults
    _liveness(fleet)
    runs = [run for run in fleet.runs.values() if not run.at_shutdown]
    hung = [run for run in runs if faults.hung_run(run)]
    runs = [run for run in runs if not faults.hung_run(run)]
    result.runs = len(runs)
    result.runs_targeted = sum(run.targeted for run in runs)
    latencies: list[float] = []
    for run in runs:
        if run.table_via == "worker_lost" or (run.stopped or {}).get("via") == "worker_lost":
            result.live_runs_released += 1
        claimed = fleet.lines.claimed_instance.get(run.run_id)
        if claimed not in {None, result.hung_instance} and (
            faults.is_hung_host(run.host) and run.stopped is not None
        ):
            via = str(run.stopped.get("via"))
            result.after_hang_via[via] = result.after_hang_via.get(via, 0) + 1
        if not run.targeted:
            continue
        if run.stopped is not None:
            _count_row(fleet, run)
            if run.confirmation not in {None, "no-run", "not-waited"}:
                # Its worker lived to stop it: the answer should have confirmed it.
                result.confirmations.healthy_stop(
                    run.conversation_id, run.confirmation, run.confirmed_ms
                )
            via = str(run.stopped.get("via"))
            if via == "queue":
                result.via_queue += 1
            elif via == "backstop":
                result.via_backstop += 1
            else:
                result.via_other[via] = result.via_other.get(via, 0) + 1
            latency = run.stopped.get("stop_to_stopped_ms")
            if isinstance(latency, int | float):
                # The worker's figure is its wall clock less the route's: a skewed
                # worker's is off by its offset, which the harness set and takes back.
                latencies.append(float(latency) - 1000 * fleet.config.offset(run.host))
            else:
                result.latencies_missing += 1
        elif run.died_with_worker:
            result.died_with_worker += 1
            if run.stop_sent_at is not None and run.stop_sent_at < faults.killed_wall:
                result.died_stop_in_flight += 1
        else:
            result.never += 1
    result.after_hang_runs = sum(result.after_hang_via.values())
    _hung(result, hung)
    ordered = sorted(latencies)
    if ordered:
        result.p50_ms = round(statistics.median(ordered), 1)
        result.p99_ms = round(_percentile(ordered, 0.99), 1)
        result.max_ms = round(ordered[-1], 1)
    _events(fleet)
    _costs(fleet)


def _count_row(fleet: Fleet, run: TrackedRun) -> None:
    result = fleet.result
    result.table_checked += 1
    if run.table_problem is not None and fleet.hosts[run.host].killed:
        # Its worker logged the stop and was killed before writing the row.
        result.killed_rows_unwritten += 1
    elif run.table_problem is not None:
        result.table_disagreements += 1
        if len(result.table_examples) < 5:
            result.table_examples.append(f"{run.conversation_id}/{run.run_id}: {run.table_problem}")


def _hung(result: FleetResult, hung: list[TrackedRun]) -> None:
    """The runs the hung worker held across its hang: how each ended."""
    result.hung_runs = len(hung)
    via: Counter[str] = Counter()
    for run in hung:
        if run.stopped is None:
            result.hung_runs_never += 1
            continue
        via[str(run.stopped.get("via"))] += 1
        # Released by a peer while it hung: the row says worker_lost, whatever ended the
        # loop after; otherwise the row must agree with the worker.
        if run.table_problem is not None and run.table_via != "worker_lost":
            result.hung_rows_wrong += 1
    result.hung_runs_via = dict(via)


def _costs(fleet: Fleet) -> None:
    counted = fleet.result.costs
    for index, report in fleet.lines.host_reports.items():
        counter.add(counted.workers, report.get("aws", {}))
        counted.worker_minutes += float(report.get("seconds", 0)) / 60
        for run in fleet.runs.values():
            if run.host != index:
                continue
            counted.runs += 1
            started = fleet.lines.started_wall.get(run.run_id)
            if started is not None and run.ended is not None:
                counted.run_hours += max(0.0, wall(run.ended) - started) / 3600
    counted.stops = fleet.result.stops_answered


def _events(fleet: Fleet) -> None:
    result = fleet.result
    handled: Counter[str] = Counter()
    duplicates: set[str] = set()  # stop ids whose cancel came after the stop was done
    wrong: dict[str, str] = {}  # one per run, however many lines tell of its end
    for _host, source, document in fleet.lines.events:
        event = document.get("event")
        if source == "worker" and event == "cancel_handled":
            handled[str(document.get("outcome"))] += 1
            if document.get("outcome") == "duplicate":
                duplicates.add(str(document.get("stop_id")))
        if source == "worker" and document.get("level") in {"ERROR", "CRITICAL"}:
            result.worker_errors += 1
        if event in {"conversation_stopped", "run_ended", "loop_ended"}:
            reason = _wrong_kill(fleet, document)
            if reason is not None:
                what = f"{document.get('conversation_id')}/{document.get('run_id')}"
                wrong.setdefault(what, f"{what}: {source} {event}, {reason}")
    result.cancels_handled = dict(handled)
    result.backstop_raced = sum(
        1
        for run in fleet.runs.values()
        if run.stopped is not None
        and run.stopped.get("via") == "backstop"
        and str(run.stopped.get("stop_id")) in duplicates
    )
    result.wrong_kills = len(wrong)
    result.wrong_kill_examples = list(wrong.values())[:5]


def _wrong_kill(fleet: Fleet, document: dict[str, Any]) -> str | None:
    run_id = document.get("run_id")
    run = fleet.runs.get(str(run_id)) if run_id else None
    if run is not None and fleet.faults.hung_run(run) and fleet.result.hung_declared:
        return None  # released while its worker hung: halted, not killed wrongly
    return wrong_kill(document, run)


def _liveness(fleet: Fleet) -> None:
    """Liveness as the workers logged it: who was declared, what was released."""
    result, faults = fleet.result, fleet.faults
    legit = {i for i in (result.victim_instance, result.hung_instance) if i}
    live_declared: list[str] = []
    live_released = 0
    queue_missing = 0
    rejoined_at: float | None = None
    for host, source, document in fleet.lines.events:
        event = document.get("event")
        if source != "worker":
            continue
        instance = document.get("worker_instance")
        if event == "worker_lost" and instance not in legit:
            live_declared.append(str(instance))
        elif event == "runs_released" and instance not in legit:
            live_released += int(document.get("runs", 0))
        elif event == "worker_declared_dead":
            if faults.is_hung_host(host) and instance == result.hung_instance:
                result.hung_declared = True
                result.hung_runs_halted_at_rejoin += int(document.get("runs_halted", 0))
            else:
                live_declared.append(str(instance))
        elif event in {"worker_rejoined", "worker_queue_recreated"} and faults.is_hung_host(host):
            result.hung_rejoined_by = str(event)
            rejoined_at = rejoined_at or wall(document)
        elif event == "own_queue_missing":
            hung_after = faults.is_hung_host(host) and (
                rejoined_at is None or wall(document) <= rejoined_at
            )
            queue_missing += not hung_after
            if faults.is_hung_host(host):
                result.hung_queue_missing_seen += 1
    result.live_workers_declared = live_declared
    result.live_queues_deleted = queue_missing
    result.live_runs_released += live_released
    result.skewed_hosts = {
        str(host.index): fleet.config.offset(host.index)
        for host in fleet.hosts
        if fleet.config.offset(host.index) and not host.killed
    }
