"""The backstop cannot die: malformed rows, failing reads and failing records are logged."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from openhands_stop.aws.claims import DynamoClaimTable
from openhands_stop.aws.clients import dynamodb_client
from openhands_stop.domain.models import utc_now
from openhands_stop.domain.ports import HeldRun
from openhands_stop.edge.service import StopService
from openhands_stop.worker import Outcome
from openhands_stop.worker.clock import Clock

from local.emulation import Stack, seed
from tests.support import drain_queue, read_record
from tests.worker.support import Agent, WorkerFactory

MALFORMED: dict[str, dict[str, Any]] = {
    "naive-stopped-at": {"stopped_at": {"S": "2026-12-01T10:00:00"}},
    "numeric-stop-id": {"stop_id": {"N": "42"}},
    "stopped-in-words": {"stopped_at": {"S": "yesterday"}},
    "fractional-version": {"version": {"N": "1.5"}},
    "list-worker-id": {"worker_id": {"L": [{"S": "w"}]}},
}
"""Rows other code may write: each field is wrong in a way that once raised."""


def overwrite_as_stopped(stack: Stack, cid: str, run_id: str, bad: dict[str, Any]) -> None:
    """The row as other code would write it: STOPPED, this run, one malformed field."""
    item = {
        "conversation_id": {"S": cid},
        "status": {"S": "STOPPED"},
        "run_id": {"S": run_id},
        **bad,
    }
    stack.client("dynamodb").put_item(TableName=stack.table_name, Item=item)


@pytest.mark.anyio
async def test_malformed_rows_are_stopped_and_later_lost_cancels_still_carried_out(
    stack: Stack,
    make_worker: WorkerFactory,
    service: StopService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed(stack, dict.fromkeys([*MALFORMED, "later"], "STARTING"))
    # It reads a queue the route never sends to: every stop here is the backstop's.
    unread = stack.stack_queue_url.replace("/cancel", "/unread-queue")
    worker = make_worker(unread, backstop_seconds=0.1, wait_time_seconds=1)
    agent = Agent()
    caplog.set_level(logging.WARNING)

    async with worker:
        tasks = {cid: await worker.start(cid, agent) for cid in [*MALFORMED, "later"]}
        for cid, bad in MALFORMED.items():
            overwrite_as_stopped(stack, cid, worker.run_id(cid) or "", bad)
        await asyncio.wait_for(asyncio.wait([tasks[c] for c in MALFORMED]), 10)
        # The backstop is still alive: a stop whose cancel is lost is carried out.
        service.stop("later", "r-later")
        await asyncio.wait_for(asyncio.wait({tasks["later"]}), 10)

    assert sorted(agent.cleanups) == sorted([*MALFORMED, "later"])
    for cid in [*MALFORMED, "later"]:
        assert (read_record(stack, cid) or {}).get("loop_stopped_via") == "backstop", cid
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "openhands_stop.rows")
    # What the backstop reads of a row (version and worker_id it never reads; a naive
    # moment is read as UTC, so it is not malformed).
    for cid, field in (("numeric-stop-id", "stop_id"), ("stopped-in-words", "stopped_at")):
        assert f"conversation_id={cid} fields={field}" in logged
    assert "yesterday" not in logged  # field names are logged, never values


class FlakyTable(DynamoClaimTable):
    """Every other read fails in a way no adapter maps: the pass fails, the next one runs."""

    reads = 0

    def runs_of(self, worker_instance: str) -> list[HeldRun]:
        FlakyTable.reads += 1
        if FlakyTable.reads % 2:
            raise RuntimeError("a bug, or a row no code expected")
        return super().runs_of(worker_instance)


@pytest.mark.anyio
async def test_a_failing_pass_is_logged_and_the_next_pass_runs(
    stack: Stack,
    make_worker: WorkerFactory,
    service: StopService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed(stack, {"lost": "STARTING"})
    worker = make_worker(
        table=FlakyTable(dynamodb_client(), stack.table_name), backstop_seconds=0.1
    )
    caplog.set_level(logging.ERROR, logger="openhands_stop.worker")

    async with worker:
        task = await worker.start("lost", Agent())
        service.stop("lost", "r")
        drain_queue(stack)
        await asyncio.wait_for(asyncio.wait({task}), 10)

    failures = [r for r in caplog.records if r.getMessage() == "backstop_failed"]
    assert failures
    assert failures[0].fields == {"error": "RuntimeError"}  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_failure_on_one_record_does_not_keep_the_others_running(
    stack: Stack,
    make_worker: WorkerFactory,
    service: StopService,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed(stack, {"poison": "STARTING", "fine": "STARTING"})
    worker = make_worker()
    caplog.set_level(logging.ERROR, logger="openhands_stop.worker")
    apply = worker._runs.apply

    async def apply_or_fail(stop: Any) -> Outcome:
        if stop.conversation_id == "poison":
            raise KeyError("boom")
        return await apply(stop)

    monkeypatch.setattr(worker._runs, "apply", apply_or_fail)

    await worker.start("poison", Agent())
    await worker.start("fine", Agent())
    service.stop("poison", "r1")
    service.stop("fine", "r2")
    drain_queue(stack)
    outcomes = await worker.backstop_once()

    assert outcomes == [Outcome.STOPPED]
    [failed] = [r for r in caplog.records if r.getMessage() == "backstop_record_failed"]
    assert failed.fields["conversation_id"] == "poison"  # type: ignore[attr-defined]
    assert failed.fields["error"] == "KeyError"  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_run_superseded_on_its_row_is_stopped_by_the_backstop(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    """Stopped, restarted and claimed elsewhere while this worker missed every cancel."""
    worker = make_worker()
    elsewhere = DynamoClaimTable(dynamodb_client(), stack.table_name)

    await worker.register("moved")
    task = await worker.start("moved", Agent())
    service.stop("moved", "r")
    drain_queue(stack)
    await worker.register("moved")
    assert elsewhere.claim(
        "moved",
        run_id="run-b",
        worker_id="b",
        worker_instance="bbbbbbbbbbbb",
        cancel_queue_url="q",
        now=utc_now(),
    ).claimed
    outcomes = await worker.backstop_once()

    assert (outcomes, task.cancelled()) == ([Outcome.STOPPED], True)
    record = read_record(stack, "moved")
    assert record is not None
    assert (record["status"], record["run_id"]) == ("RUNNING", "run-b")  # run b untouched
    assert "loop_stopped_via" not in record


@pytest.mark.anyio
async def test_the_backstop_leaves_a_fresh_stop_to_its_cancel(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    """Within the grace the cancel is most likely on its way: the queue stops the run, and
    the backstop acts only once the stop is older than the grace (a lost cancel)."""
    seed(stack, {"fresh": "STARTING"})
    worker = make_worker(backstop_grace_seconds=0.5)

    task = await worker.start("fresh", Agent())
    service.stop("fresh", "r")
    drain_queue(stack)  # lost after all
    early = await worker.backstop_once()
    assert not task.done()
    await asyncio.sleep(0.6)
    late = await worker.backstop_once()

    assert (early, late) == ([], [Outcome.STOPPED])


@pytest.mark.parametrize("stopped_at", ["2999-01-01T00:00:00+00:00", "2001-01-01T00:00:00+00:00"])
@pytest.mark.anyio
async def test_the_grace_is_the_workers_own_time_whatever_the_rows_clock_said(
    stack: Stack, make_worker: WorkerFactory, stopped_at: str
) -> None:
    """A stop stamped far ahead or far behind (another host's clock, a row of other code's)
    waits the grace on this worker's monotonic clock from the pass that first saw it."""
    seed(stack, {"skewed": "STARTING"})
    elapsed = [1000.0]
    worker = make_worker(backstop_grace_seconds=60, clock=Clock(monotonic=lambda: elapsed[0]))

    await worker.start("skewed", Agent())
    overwrite_as_stopped(
        stack, "skewed", worker.run_id("skewed") or "", {"stopped_at": {"S": stopped_at}}
    )
    first = await worker.backstop_once()
    elapsed[0] += 59
    within = await worker.backstop_once()
    elapsed[0] += 1
    due = await worker.backstop_once()

    assert (first, within, due) == ([], [], [Outcome.STOPPED])
