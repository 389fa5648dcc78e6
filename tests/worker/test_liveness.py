"""Liveness: a dead worker's runs are released by a peer; a live one's never, whatever its clock.

Each judge runs on a monotonic clock the test moves by hand (``Clock(monotonic=...)``), and
the judged worker's wall clock is set 15 minutes off: what decides is a counter and the
judge's own elapsed time, nothing else.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from openhands_stop.aws.worker_queues import WorkerQueues
from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.edge.service import StopService
from openhands_stop.worker import ClaimRejected, Outcome, Worker, WorkerClosed
from openhands_stop.worker.clock import Clock

from local.emulation import Stack, seed
from tests.support import drain_queue, read_record
from tests.worker.support import Agent, WorkerFactory

ORPHAN = 30.0


class Elapsed:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fleet(make_worker: WorkerFactory, stack: Stack, clock: Clock, **overrides: Any) -> Worker:
    return make_worker(
        stack.stack_queue_url,
        worker_queue_prefix=stack.worker_queue_prefix,
        orphan_queue_seconds=ORPHAN,
        queue_heartbeat_seconds=5,
        clock=clock,
        **overrides,
    )


def queues(stack: Stack) -> set[str]:
    listed = stack.client("sqs").list_queues(QueueNamePrefix=stack.worker_queue_prefix)
    return set(listed.get("QueueUrls", []))


def liveness_item(stack: Stack, instance: str) -> dict[str, Any] | None:
    item: dict[str, Any] | None = (
        stack.client("dynamodb")
        .get_item(TableName=stack.table_name, Key={"conversation_id": {"S": f"worker#{instance}"}})
        .get("Item")
    )
    return item


@pytest.mark.anyio
async def test_a_dead_workers_runs_are_released_and_restart_on_a_peer(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    seed(stack, {"a1": "STARTING", "a2": "STARTING"})
    judge_time = Elapsed()
    dead = fleet(make_worker, stack, Clock.skewed(+900))
    judge = fleet(make_worker, stack, Clock(monotonic=judge_time))
    await dead.open()
    await judge.open()
    await dead.start("a1", Agent())
    await dead.start("a2", Agent())
    service.stop("a2", "stopped-before-release")  # its cancel goes to the dead queue
    dead_queue = dead.queue_url
    # `dead` beats no more from here (a SIGKILL, as far as its peers can tell).

    first = await judge.judge_once()  # starts watching its counter
    judge_time.now += ORPHAN - 0.1
    too_soon = await judge.judge_once()
    judge_time.now += 0.1
    found = await judge.judge_once()

    assert (first, too_soon, found) == ([], [], [dead.instance])
    for cid in ("a1", "a2"):
        record = read_record(stack, cid)
        assert record is not None
        assert (record["status"], record["loop_stopped_via"]) == ("STOPPED", "worker_lost")
        assert "worker_instance" not in record
    assert dead_queue not in queues(stack)
    assert service.stop("a1", "after").response().message == "Conversation was not running"
    await judge.register("a1")
    assert not (await judge.start("a1", Agent())).done()
    # The dead item stays an orphan age more (a claim of its last moment is released too).
    assert liveness_item(stack, dead.instance) is not None
    judge_time.now += ORPHAN
    await judge.judge_once()
    assert liveness_item(stack, dead.instance) is None
    await judge.aclose()


@pytest.mark.parametrize("skew", [+900.0, -900.0])
@pytest.mark.anyio
async def test_a_live_worker_is_never_released_whatever_its_clock_says(
    stack: Stack, make_worker: WorkerFactory, skew: float
) -> None:
    seed(stack, {"live": "STARTING"})
    judge_time = Elapsed()
    live = fleet(make_worker, stack, Clock.skewed(skew))
    judge = fleet(make_worker, stack, Clock(monotonic=judge_time))
    await live.open()
    await judge.open()
    task = await live.start("live", Agent())

    for _ in range(4):
        await judge.judge_once()
        judge_time.now += ORPHAN  # an orphan age between looks, but a beat in each
        assert await live.beat_once()

    assert await judge.judge_once() == []
    assert not task.done()
    assert (read_record(stack, "live") or {})["status"] == "RUNNING"
    assert live.queue_url in queues(stack)
    await live.aclose()
    await judge.aclose()


@pytest.mark.anyio
async def test_a_worker_that_hung_past_the_orphan_age_halts_its_runs_and_joins_again(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    seed(stack, {"held": "STARTING", "later": "STARTING"})
    judge_time = Elapsed()
    hung = fleet(make_worker, stack, Clock())
    judge = fleet(make_worker, stack, Clock(monotonic=judge_time))
    await hung.open()
    await judge.open()
    held = await hung.start("held", Agent())
    old_instance, old_queue = hung.instance, hung.queue_url

    await judge.judge_once()
    judge_time.now += ORPHAN
    assert await judge.judge_once() == [old_instance]
    alive = await hung.beat_once()  # it resumes, and learns

    assert not alive
    assert held.cancelled()
    assert hung.instance != old_instance
    assert hung.queue_url != old_queue
    assert (read_record(stack, "held") or {})["loop_stopped_via"] == "worker_lost"
    # Runs it claims now are stopped through its new queue.
    task = await hung.start("later", Agent())
    service.stop("later", "r")
    assert await hung.poll_once() == [Outcome.STOPPED]
    assert task.cancelled()
    await hung.aclose()
    await judge.aclose()


@pytest.mark.parametrize("beat", [{"N": "1e30"}, {"S": "inf"}, {"S": "nan"}, None])
@pytest.mark.anyio
async def test_a_counter_edited_into_anything_is_still_judged_by_whether_it_moves(
    stack: Stack, make_worker: WorkerFactory, beat: dict[str, str] | None
) -> None:
    """A counter in the future, inf, nan or gone: never trusted, never an immunity."""
    seed(stack, {"w": "STARTING"})
    judge_time = Elapsed()
    odd = fleet(make_worker, stack, Clock())
    judge = fleet(make_worker, stack, Clock(monotonic=judge_time))
    await odd.open()
    await judge.open()
    await odd.start("w", Agent())
    key = {"conversation_id": {"S": f"worker#{odd.instance}"}}
    dynamodb = stack.client("dynamodb")
    if beat is None:
        dynamodb.update_item(TableName=stack.table_name, Key=key, UpdateExpression="REMOVE beat")
    else:
        dynamodb.update_item(
            TableName=stack.table_name,
            Key=key,
            UpdateExpression="SET beat = :b",
            ExpressionAttributeValues={":b": beat},
        )

    await judge.judge_once()
    judge_time.now += ORPHAN
    found = await judge.judge_once()

    assert found == [odd.instance]
    assert (read_record(stack, "w") or {})["loop_stopped_via"] == "worker_lost"
    await judge.aclose()


@pytest.mark.anyio
async def test_a_fallback_cancel_reaches_the_worker_holding_the_run(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    """The row names no usable queue: the cancel goes to the stack queue, where another
    worker receives it and sends it on to the holder, which stops its run via its queue."""
    seed(stack, {"held": "STARTING"})
    holder = fleet(make_worker, stack, Clock())
    other = fleet(make_worker, stack, Clock())
    await holder.open()
    await other.open()
    task = await holder.start("held", Agent())
    stack.client("dynamodb").update_item(
        TableName=stack.table_name,
        Key={"conversation_id": {"S": "held"}},
        UpdateExpression="SET cancel_queue_url = :q",
        ExpressionAttributeValues={":q": {"S": "https://example.invalid/1/elsewhere.fifo"}},
    )

    service.stop("held", "r")
    routed = await other.poll_stack_queue_once(0)
    stopped = await holder.poll_once(0)

    assert routed == [Outcome.FORWARDED]
    assert stopped == [Outcome.STOPPED]
    assert task.cancelled()
    assert (read_record(stack, "held") or {})["loop_stopped_via"] == "queue"
    assert drain_queue(stack) == []  # deleted from the stack queue once forwarded
    await holder.aclose()
    await other.aclose()


@pytest.mark.anyio
async def test_a_claim_that_lands_after_close_halts_its_loop(
    stack: Stack, make_worker: WorkerFactory
) -> None:
    seed(stack, {"late": "STARTING"})
    worker = make_worker()
    agent = Agent()
    await worker.open()
    claiming = asyncio.create_task(worker.start("late", agent))
    await asyncio.sleep(0)  # the claim is in flight (in its thread)
    await worker.aclose()

    with pytest.raises(WorkerClosed):
        await claiming
    assert agent.runs == []
    record = read_record(stack, "late")
    assert record is not None
    assert (record["status"], record["loop_stopped_via"]) == ("STOPPED", "worker_shutdown")


@pytest.mark.anyio
async def test_the_start_sweep_goes_on_past_a_queue_it_cannot_delete(
    stack: Stack, make_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs = stack.client("sqs")
    fifo = {"FifoQueue": "true"}
    prefix = stack.worker_queue_prefix
    denied = sqs.create_queue(QueueName=f"{prefix}aaaaaaaaaaaa.fifo", Attributes=fifo)["QueueUrl"]
    swept = sqs.create_queue(QueueName=f"{prefix}bbbbbbbbbbbb.fifo", Attributes=fifo)["QueueUrl"]
    delete = WorkerQueues.delete

    def refuse_one(self: WorkerQueues, queue_url: str) -> None:
        if queue_url == denied:
            raise DependencyFailure("sqs", "AccessDenied", transient=False)
        delete(self, queue_url)

    monkeypatch.setattr(WorkerQueues, "delete", refuse_one)
    worker = fleet(make_worker, stack, Clock())
    await worker.open()

    assert denied in queues(stack)
    assert swept not in queues(stack)
    await worker.aclose()


@pytest.mark.anyio
async def test_a_stop_restart_stop_on_one_worker_gets_both_cancels_via_its_queue(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    """At the default long poll (20 s): the second cancel arrives in the poll already
    waiting, as on SQS (local.fifo_moto), not when that poll ends."""
    seed(stack, {"again": "STARTING"})
    worker = make_worker(
        stack.stack_queue_url, worker_queue_prefix=stack.worker_queue_prefix, wait_time_seconds=20
    )
    agent = Agent()
    async with worker:
        first = await worker.start("again", agent)
        service.stop("again", "r1")
        await asyncio.wait_for(asyncio.wait({first}), 15)
        await worker.register("again")
        second = await worker.start("again", agent)
        service.stop("again", "r2")
        await asyncio.wait_for(asyncio.wait({second}), 15)  # well inside one long poll

    vias = [json.dumps((read_record(stack, "again") or {}).get("loop_stopped_via"))]
    assert vias == ['"queue"']
    assert first.cancelled()
    assert second.cancelled()


@pytest.mark.anyio
async def test_an_unreadable_row_is_a_run_that_is_over(
    stack: Stack, make_worker: WorkerFactory
) -> None:
    """A held run whose row is deleted, or carries a status this code does not know."""
    seed(stack, {"deleted": "STARTING", "archived": "STARTING", "lowercase": "STARTING"})
    worker = make_worker()
    tasks = {cid: await worker.start(cid, Agent()) for cid in ("deleted", "archived", "lowercase")}
    dynamodb = stack.client("dynamodb")
    dynamodb.delete_item(TableName=stack.table_name, Key={"conversation_id": {"S": "deleted"}})
    for cid, status in (("archived", "ARCHIVED"), ("lowercase", "running")):
        dynamodb.update_item(
            TableName=stack.table_name,
            Key={"conversation_id": {"S": cid}},
            UpdateExpression="SET #s = :s",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": status}},
        )

    outcomes = await worker.backstop_once()

    assert outcomes == [Outcome.STOPPED] * 3
    assert all(task.cancelled() for task in tasks.values())
    await worker.aclose()


@pytest.mark.anyio
async def test_register_is_refused_for_a_running_conversation_until_its_worker_is_released(
    stack: Stack, make_worker: WorkerFactory
) -> None:
    seed(stack, {"busy": "STARTING"})
    judge_time = Elapsed()
    dead = fleet(make_worker, stack, Clock())
    peer = fleet(make_worker, stack, Clock(monotonic=judge_time))
    await dead.open()
    await peer.open()
    await dead.start("busy", Agent())

    with pytest.raises(ClaimRejected):
        await peer.register("busy")
    await peer.judge_once()
    judge_time.now += ORPHAN
    await peer.judge_once()
    await peer.register("busy")
    await peer.aclose()
