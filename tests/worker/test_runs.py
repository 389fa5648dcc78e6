"""Runs, not conversations: restarts, stale cancels, loops the host runs, the row's record."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from openhands_stop.domain.models import CancelMessage, RunEnd, utc_now
from openhands_stop.edge.service import StopService
from openhands_stop.worker import ClaimRejected, Outcome, Worker

from local.emulation import Stack, seed
from tests.support import drain_queue, read_record
from tests.worker.support import Agent, WorkerFactory, queue_depth, send_raw, stopped_lines

CONVERSATION = "conv-runs-1"


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "openhands_stop.worker" and r.getMessage() == name
    ]


async def stop_by_queue(worker: Worker, service: StopService, cid: str) -> list[Outcome]:
    service.stop(cid, f"req-{cid}")
    return await worker.poll_once()


@pytest.mark.anyio
async def test_a_conversation_restarted_on_the_same_worker_is_stopped_again(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    """Claim, stop, register again, claim again, stop again: each run stopped by its stop."""
    worker = make_worker()
    agent = Agent()

    outcomes = []
    for _ in range(3):
        await worker.register(CONVERSATION)
        task = await worker.start(CONVERSATION, agent)
        outcomes.append(await stop_by_queue(worker, service, CONVERSATION))
        assert task.cancelled()
        assert worker.running == frozenset()
    await worker.aclose()

    assert outcomes == [[Outcome.STOPPED]] * 3
    assert agent.cleanups == [CONVERSATION] * 3
    record = read_record(stack, CONVERSATION)
    assert record is not None
    assert record["status"] == "STOPPED"
    assert record["loop_stopped_via"] == "queue"


@pytest.mark.anyio
async def test_a_stale_cancel_for_an_older_run_never_stops_the_newer_one(
    stack: Stack,
    make_worker: WorkerFactory,
    service: StopService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Run 1's cancel, redelivered (a redrive, a duplicate past FIFO's window), after run 2
    started: deleted as stale, and run 2 keeps running with its row RUNNING."""
    worker = make_worker()
    agent = Agent()
    caplog.set_level(logging.INFO, logger="openhands_stop.worker")

    await worker.register(CONVERSATION)
    await worker.start(CONVERSATION, agent)
    first_run = worker.run_id(CONVERSATION)
    service.stop(CONVERSATION, "req-run-1")
    [first_cancel] = drain_queue(stack)
    assert first_cancel["run_id"] == first_run
    send_raw(stack, stack.stack_queue_url, CancelMessage(**first_cancel).model_dump_json(), "a")
    assert await worker.poll_once() == [Outcome.STOPPED]

    await worker.register(CONVERSATION)
    second = await worker.start(CONVERSATION, agent)
    # The same cancel again, as a redrive would deliver it (a new dedup id).
    send_raw(stack, stack.stack_queue_url, CancelMessage(**first_cancel).model_dump_json(), "b")
    outcomes = await worker.poll_once()
    still_running = not second.done()
    await worker.aclose()

    assert outcomes == [Outcome.STALE]
    assert still_running
    [stale] = [e for e in events(caplog, "cancel_handled") if e["outcome"] == "stale"]
    assert stale["conversation_id"] == CONVERSATION
    assert len(stopped_lines(caplog)) == 1  # only run 1 was ever stopped by a cancel
    assert queue_depth(stack, stack.stack_queue_url) == (0, 0)  # the stale one is deleted


@pytest.mark.anyio
async def test_a_cancel_without_a_run_is_matched_by_the_row_never_by_clocks(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    """A schema-1 cancel names no run: stamped minutes ahead (the route's clock fast), it
    still stops nothing while the row says this run goes on; once the row is STOPPED, it
    stops it. A run-less cancel of schema 3 carries the row version its stop found: one from
    before this run's claim (a STARTING conversation's stop) is stale without a read."""
    worker = make_worker()
    agent = Agent()

    def legacy(dedup: str) -> None:
        body = CancelMessage(
            sid=CONVERSATION,
            schema_version=1,
            stop_id=f"legacy-{dedup}",
            request_id="r",
            requested_at=utc_now() + timedelta(minutes=5),
        ).model_dump(mode="json", exclude={"run_id", "row_version"})
        send_raw(stack, stack.stack_queue_url, json.dumps(body), dedup)

    await worker.register(CONVERSATION)
    task = await worker.start(CONVERSATION, agent)
    versioned = CancelMessage(
        sid=CONVERSATION,
        stop_id="starting-stop",
        request_id="r",
        requested_at=utc_now(),
        row_version=1,
    )
    send_raw(stack, stack.stack_queue_url, versioned.model_dump_json(), "versioned")
    versioned_outcome = await worker.poll_once()
    legacy("ahead")
    while_running = await worker.poll_once()
    service.stop(CONVERSATION, "r")
    drain_queue(stack)  # its own cancel lost: only the legacy one arrives
    legacy("after-stop")
    after_stop = await worker.poll_once()

    assert versioned_outcome == [Outcome.STALE]
    assert [while_running, after_stop] == [[Outcome.STALE], [Outcome.STOPPED]]
    assert task.cancelled()


@pytest.mark.anyio
async def test_the_same_stop_twice_is_carried_out_once(
    stack: Stack, make_worker: WorkerFactory, standard_queue: str, service: StopService
) -> None:
    """Dedup by stop id: a standard queue delivers the one stop's cancel twice."""
    worker = make_worker(standard_queue)
    seed(stack, {CONVERSATION: "STARTING"})

    await worker.start(CONVERSATION, Agent())
    body = CancelMessage(
        sid=CONVERSATION,
        stop_id="stop-once",
        request_id="r",
        requested_at=utc_now(),
        run_id=worker.run_id(CONVERSATION),
    ).model_dump_json()
    send_raw(stack, standard_queue, body)
    first = await worker.poll_once()
    send_raw(stack, standard_queue, body)
    again = await worker.poll_once()

    assert first + again == [Outcome.STOPPED, Outcome.DUPLICATE]


@pytest.mark.anyio
async def test_register_refuses_a_running_conversation_and_restart_forgets_the_old_run(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    worker = make_worker()

    await worker.register(CONVERSATION)
    await worker.register(CONVERSATION)  # still STARTING: fine, nothing changes
    await worker.start(CONVERSATION, Agent())
    with pytest.raises(ClaimRejected) as refused:
        await worker.register(CONVERSATION)
    assert refused.value.status == "RUNNING"
    await stop_by_queue(worker, service, CONVERSATION)
    await worker.register(CONVERSATION)

    record = read_record(stack, CONVERSATION)
    assert record is not None
    assert record["status"] == "STARTING"
    for gone in ("run_id", "worker_id", "cancel_queue_url", "stop_id", "loop_stopped_via"):
        assert gone not in record, gone


@pytest.mark.parametrize(
    ("ending", "via"), [("return", "finished"), ("raise", "failed")], ids=["finished", "failed"]
)
@pytest.mark.anyio
async def test_a_loop_that_ends_by_itself_leaves_its_row_stopped(
    stack: Stack, make_worker: WorkerFactory, service: StopService, ending: str, via: str
) -> None:
    """The table never says RUNNING for a loop that is gone; a later stop is "not running"."""
    worker = make_worker()

    async def loop(conversation_id: str) -> None:
        await asyncio.sleep(0)
        if ending == "raise":
            raise RuntimeError("the agent crashed")

    await worker.register(CONVERSATION)
    task = await worker.start(CONVERSATION, loop)
    await asyncio.wait({task})
    await asyncio.sleep(0.05)
    await worker.aclose()  # waits for the row's write

    record = read_record(stack, CONVERSATION)
    assert record is not None
    assert (record["status"], record["loop_stopped_via"]) == ("STOPPED", via)
    assert service.stop(CONVERSATION, "late").previous_status is None


@pytest.mark.anyio
async def test_an_adopted_loop_is_stopped_through_its_hosts_close(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    """A loop the host runs (OpenHands' session): the cancel awaits the host's close."""
    worker = make_worker()
    closed: list[str] = []

    await worker.register(CONVERSATION)

    async def close() -> None:
        closed.append(CONVERSATION)
        # The host's close reports the session gone; the worker is already ending it.
        assert not await worker.release(CONVERSATION)

    await worker.adopt(CONVERSATION, close)
    outcomes = await stop_by_queue(worker, service, CONVERSATION)
    still_held = CONVERSATION in worker.running

    assert outcomes == [Outcome.STOPPED]
    assert closed == [CONVERSATION]
    assert not still_held
    assert read_record(stack, CONVERSATION)["loop_stopped_via"] == "queue"  # type: ignore[index]


@pytest.mark.anyio
async def test_a_loop_its_host_closes_marks_the_row_stopped(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    worker = make_worker()

    await worker.register(CONVERSATION)
    await worker.adopt(CONVERSATION, asyncio.sleep)  # type: ignore[arg-type]
    first = await worker.release(CONVERSATION, RunEnd.HOST)
    again = await worker.release(CONVERSATION, RunEnd.HOST)

    assert (first, again) == (True, False)
    record = read_record(stack, CONVERSATION)
    assert record is not None
    assert (record["status"], record["loop_stopped_via"]) == ("STOPPED", "host")
    assert service.stop(CONVERSATION, "late").response().message == "Conversation was not running"


@pytest.mark.anyio
async def test_the_row_alone_tells_a_stop_carried_out_from_one_only_recorded(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    """Stopped via the queue, via the backstop, and recorded but never carried out."""
    seed(stack, {"by-queue": "STARTING", "by-backstop": "STARTING", "nobody": "RUNNING"})
    worker = make_worker()

    await worker.start("by-queue", Agent())
    await worker.start("by-backstop", Agent())
    await stop_by_queue(worker, service, "by-queue")
    service.stop("by-backstop", "r")
    drain_queue(stack)  # the cancel is lost
    assert await worker.backstop_once() == [Outcome.STOPPED]
    service.stop("nobody", "r")

    rows = {cid: read_record(stack, cid) or {} for cid in ("by-queue", "by-backstop", "nobody")}
    assert {cid: row["status"] for cid, row in rows.items()} == dict.fromkeys(rows, "STOPPED")
    assert {cid: row.get("loop_stopped_via") for cid, row in rows.items()} == {
        "by-queue": "queue",
        "by-backstop": "backstop",
        "nobody": None,
    }
    assert rows["by-queue"]["loop_stopped_at"] >= rows["by-queue"]["stopped_at"]
