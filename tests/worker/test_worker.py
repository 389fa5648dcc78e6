"""The worker against moto in process: claim, cancel, duplicate, unknown, unparsable, backstop."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import datetime
from typing import Any

import pytest
from openhands_stop.aws.cancel_inbox import SqsCancelInbox
from openhands_stop.aws.claims import ClaimResult, DynamoClaimTable
from openhands_stop.aws.clients import dynamodb_client
from openhands_stop.domain.models import utc_now
from openhands_stop.edge.service import StopService
from openhands_stop.worker import ClaimRejected, Outcome

from local.emulation import Stack, seed
from tests.support import AwsCallCounter, drain_queue, read_record
from tests.worker.support import (
    WORKER_ID,
    Agent,
    ClaimAnswerHeld,
    WorkerFactory,
    cancel_for,
    queue_depth,
    send_raw,
    stopped_lines,
    wait_until_logged,
)

CONVERSATION = "conv-worker-1"

WORKER_OPERATIONS = {
    "dynamodb.UpdateItem",
    "dynamodb.GetItem",
    "dynamodb.BatchGetItem",
    "dynamodb.Query",
    "dynamodb.DeleteItem",
    "sqs.ReceiveMessage",
    "sqs.DeleteMessage",
    "sqs.ChangeMessageVisibility",
    "sqs.GetQueueAttributes",
}
"""What the worker's managed IAM policy allows a worker without a queue of its own (and
sqs:SendMessage, to set an unreadable message aside; the route sends too, so it is not
told apart here: tests/worker/test_worker_queues.py checks the policy itself)."""


# -- claim ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_claim_moves_starting_to_running_with_worker_and_queue(
    stack: Stack, make_worker: WorkerFactory, worker_queue: str
) -> None:
    seed(stack, {CONVERSATION: "STARTING"})
    worker = make_worker(worker_queue)
    agent = Agent()

    task = await worker.start(CONVERSATION, agent)
    await asyncio.sleep(0)
    assert not task.done()
    assert worker.running == {CONVERSATION}
    await worker.aclose()

    record = read_record(stack, CONVERSATION)
    assert record is not None
    # Claimed (version 1), then ended by the worker's shutdown (version 2): the table never
    # says RUNNING for a loop that is gone.
    assert record["status"] == "STOPPED"
    assert record["loop_stopped_via"] == "worker_shutdown"
    assert record["run_id"]
    assert record["worker_id"] == WORKER_ID
    assert record["cancel_queue_url"] == worker_queue
    assert record["claimed_at"]
    assert record["version"] == "2"
    assert agent.runs == [CONVERSATION]


@pytest.mark.parametrize("status", ["STOPPED", None])
@pytest.mark.anyio
async def test_a_claim_on_a_stopped_or_unknown_conversation_fails_and_no_loop_starts(
    stack: Stack, make_worker: WorkerFactory, status: str | None
) -> None:
    if status:
        seed(stack, {CONVERSATION: status})
    worker = make_worker()
    agent = Agent()

    with pytest.raises(ClaimRejected) as rejected:
        await worker.start(CONVERSATION, agent)

    assert rejected.value.status == status
    assert agent.runs == []
    assert worker.running == frozenset()
    record = read_record(stack, CONVERSATION)
    if status is None:
        assert record is None  # the failed claim created no row
    else:
        assert record == {"conversation_id": CONVERSATION, "status": "STOPPED"}


def test_a_conversation_running_elsewhere_is_refused_but_our_own_claim_can_be_retried(
    stack: Stack,
) -> None:
    seed(stack, {CONVERSATION: "STARTING"})
    table = DynamoClaimTable(dynamodb_client(), stack.table_name)

    def claim(worker_id: str, run_id: str) -> ClaimResult:
        return table.claim(
            CONVERSATION,
            run_id=run_id,
            worker_id=worker_id,
            worker_instance=f"{worker_id}0",
            cancel_queue_url="q",
            now=utc_now(),
        )

    assert claim("a", "run-a").claimed
    assert claim("a", "run-a").claimed  # our first answer was lost: the retry still succeeds
    assert not claim("a", "run-a2").claimed  # a second run of it, even here, is refused
    refused = claim("b", "run-b")
    assert not refused.claimed
    assert refused.record is not None
    assert refused.record.worker_id == "a"


@pytest.mark.anyio
async def test_a_stop_that_arrives_while_claiming_wins(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    """Claim written, cancel routed here and received before the loop exists: no loop."""
    seed(stack, {CONVERSATION: "STARTING"})
    held = ClaimAnswerHeld(stack)
    worker = make_worker(table=held)
    agent = Agent()

    starting = asyncio.create_task(worker.start(CONVERSATION, agent))
    await asyncio.to_thread(held.claimed.wait, 5)
    service.stop(CONVERSATION, "req-early")
    outcomes = await worker.poll_once()
    held.proceed.set()
    with pytest.raises(ClaimRejected):
        await starting

    assert outcomes == [Outcome.BEFORE_START]
    assert agent.runs == []
    assert queue_depth(stack, stack.stack_queue_url) == (0, 0)


# -- cancel --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_cancel_stops_the_loop_then_deletes_its_message(
    stack: Stack,
    make_worker: WorkerFactory,
    service: StopService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed(stack, {CONVERSATION: "STARTING", "other": "STARTING"})
    worker = make_worker()
    agent = Agent()
    caplog.set_level(logging.INFO, logger="openhands_stop.worker")

    task = await worker.start(CONVERSATION, agent)
    other = await worker.start("other", agent)
    service.stop(CONVERSATION, "req-42")
    outcomes = await worker.poll_once()
    cancelled, other_done = task.cancelled(), other.done()
    await worker.aclose()

    assert outcomes == [Outcome.STOPPED]
    assert cancelled
    assert not other_done  # only the conversation named by the cancel
    assert agent.cleanups[0] == CONVERSATION
    assert queue_depth(stack, stack.stack_queue_url) == (0, 0)
    record = read_record(stack, CONVERSATION)
    assert record is not None
    assert record["status"] == "STOPPED"
    [line] = stopped_lines(caplog)
    assert line["conversation_id"] == CONVERSATION
    assert line["via"] == "queue"
    assert line["request_id"] == "req-42"
    assert line["cleanup_completed"] is True
    assert isinstance(line["stop_to_stopped_ms"], float)
    assert line["stop_to_stopped_ms"] >= 0


@pytest.mark.anyio
async def test_duplicate_cancels_are_harmless(
    stack: Stack,
    make_worker: WorkerFactory,
    standard_queue: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same stop delivered twice at once, and once more later: one cancel, all deleted."""
    seed(stack, {CONVERSATION: "STARTING"})
    worker = make_worker(standard_queue)
    agent = Agent()
    caplog.set_level(logging.INFO, logger="openhands_stop.worker")

    await worker.start(CONVERSATION, agent)
    cancel = cancel_for(CONVERSATION, run_id=worker.run_id(CONVERSATION))
    send_raw(stack, standard_queue, cancel)
    send_raw(stack, standard_queue, cancel)
    first = await worker.poll_once()
    while len(first) < 2:  # a standard queue may deliver them in two receives
        first += await worker.poll_once()
    send_raw(stack, standard_queue, cancel)
    later = await worker.poll_once()
    await worker.aclose()

    assert sorted(first) == sorted([Outcome.STOPPED, Outcome.DUPLICATE])
    assert later == [Outcome.DUPLICATE]
    assert agent.cleanups == [CONVERSATION]
    assert len(stopped_lines(caplog)) == 1
    assert queue_depth(stack, standard_queue) == (0, 0)


@pytest.mark.anyio
async def test_a_cancel_for_a_conversation_not_run_here_is_deleted_as_handled(
    stack: Stack, make_worker: WorkerFactory, worker_queue: str
) -> None:
    seed(stack, {CONVERSATION: "STARTING"})
    worker = make_worker(worker_queue)

    task = await worker.start(CONVERSATION, Agent())
    send_raw(stack, worker_queue, cancel_for("someone-elses"))
    outcomes = await worker.poll_once()
    still_running = not task.done()
    await worker.aclose()

    assert outcomes == [Outcome.NOT_OURS]
    assert still_running
    assert queue_depth(stack, worker_queue) == (0, 0)


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        '{"message_type": "close_session"}',
        '{"message_type": "something_else", "sid": "conv-worker-1"}',
        '{"message_type": "close_session", "sid": "../etc", "stop_id": "s", '
        '"request_id": "r", "requested_at": "2026-01-01T00:00:00Z"}',
    ],
)
@pytest.mark.anyio
async def test_an_unparsable_message_is_set_aside_on_the_dead_letter_queue_at_once(
    stack: Stack, make_worker: WorkerFactory, body: str
) -> None:
    """Not left to hold back its FIFO group (a real cancel's, perhaps) until a redrive."""
    seed(stack, {CONVERSATION: "STARTING"})
    worker = make_worker()

    task = await worker.start(CONVERSATION, Agent())
    send_raw(stack, stack.stack_queue_url, body)
    outcomes = await worker.poll_once()
    still_running = not task.done()
    await worker.aclose()

    assert outcomes == [Outcome.UNPARSABLE]
    assert still_running
    assert queue_depth(stack, stack.stack_queue_url) == (0, 0)
    aside = stack.client("sqs").receive_message(QueueUrl=stack.dead_letter_queue_url)
    assert [m["Body"] for m in aside["Messages"]] == [body]


# -- backstop ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_backstop_stops_a_loop_whose_cancel_was_lost(
    stack: Stack,
    make_worker: WorkerFactory,
    service: StopService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed(stack, {CONVERSATION: "STARTING", "still-running": "STARTING"})
    worker = make_worker()
    agent = Agent()
    caplog.set_level(logging.INFO, logger="openhands_stop.worker")

    task = await worker.start(CONVERSATION, agent)
    other = await worker.start("still-running", agent)
    service.stop(CONVERSATION, "req-lost")
    drain_queue(stack)  # the cancel is lost
    found = await worker.backstop_once()
    again = await worker.backstop_once()
    cancelled, other_done = task.cancelled(), other.done()
    await worker.aclose()

    assert found == [Outcome.STOPPED]
    assert again == []  # nothing left to stop: the stopped loop is no longer read
    assert cancelled
    assert not other_done
    [line] = stopped_lines(caplog)
    assert line["via"] == "backstop"
    assert line["request_id"] == "req-lost"
    assert isinstance(line["requested_at"], datetime)


@pytest.mark.anyio
async def test_the_serving_worker_stops_loops_from_its_queue_and_from_its_backstop(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    """``async with``: polling and backstop in the background, and a clean close."""
    seed(stack, {"by-queue": "STARTING", "by-backstop": "STARTING", "left": "STARTING"})
    # Its queue is not one the route sends to (both cancels go to the stack queue), so the
    # test decides what reaches it; the grace leaves by-queue to the cancel it is given.
    own = stack.client("sqs").create_queue(
        QueueName="unrouted.fifo", Attributes={"FifoQueue": "true"}
    )["QueueUrl"]
    worker = make_worker(own, wait_time_seconds=1, backstop_seconds=0.2, backstop_grace_seconds=0.5)
    agent = Agent()

    async with worker:
        by_queue = await worker.start("by-queue", agent)
        by_backstop = await worker.start("by-backstop", agent)
        await worker.start("left", agent)
        service.stop("by-queue", "r1")
        service.stop("by-backstop", "r2")
        drain_queue(stack)
        send_raw(stack, own, cancel_for("by-queue"), dedup="again")
        await asyncio.wait_for(asyncio.gather(by_queue, by_backstop, return_exceptions=True), 10)
    assert worker.running == frozenset()

    assert sorted(agent.cleanups) == ["by-backstop", "by-queue", "left"]
    rows = {cid: read_record(stack, cid) or {} for cid in ("by-queue", "by-backstop", "left")}
    assert {cid: row.get("loop_stopped_via") for cid, row in rows.items()} == {
        "by-queue": "queue",
        "by-backstop": "backstop",
        "left": "worker_shutdown",
    }
    assert {row["status"] for row in rows.values()} == {"STOPPED"}
    assert queue_depth(stack, own) == (0, 0)


@pytest.mark.anyio
async def test_a_long_poll_still_in_flight_at_shutdown_hands_back_what_it_receives(
    stack: Stack,
    make_worker: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger="openhands_stop.worker")
    polling = threading.Event()
    receive = SqsCancelInbox.receive

    def receive_and_tell(inbox: SqsCancelInbox, wait_seconds: int, max_messages: int = 10) -> Any:
        polling.set()  # the real receive follows: the poll is in flight
        return receive(inbox, wait_seconds, max_messages)

    monkeypatch.setattr(SqsCancelInbox, "receive", receive_and_tell)
    seed(stack, {CONVERSATION: "STARTING"})
    worker = make_worker(wait_time_seconds=10)
    await worker.start(CONVERSATION, Agent())
    serving = asyncio.create_task(worker.serve())
    assert await asyncio.to_thread(polling.wait, 15)
    worker.shutdown()
    await asyncio.wait_for(serving, 5)  # serving ends at once: the poll is left to its thread
    send_raw(stack, stack.stack_queue_url, cancel_for(CONVERSATION))

    await wait_until_logged(caplog, "cancels_handed_back")
    assert queue_depth(stack, stack.stack_queue_url) == (1, 0)  # visible again, for a live worker
    assert worker.running == frozenset({CONVERSATION})  # received after shutdown: not acted on
    await worker.aclose()


@pytest.mark.anyio
async def test_the_worker_calls_only_what_its_iam_policy_allows(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    seed(stack, {CONVERSATION: "STARTING", "lost": "STARTING", "gone": "STOPPED"})
    worker = make_worker()

    with AwsCallCounter() as counter:
        with pytest.raises(ClaimRejected):
            await worker.start("gone", Agent())
        await worker.start(CONVERSATION, Agent())
        await worker.start("lost", Agent())
        send_raw(stack, stack.stack_queue_url, "garbage", dedup="g")
        service.stop(CONVERSATION, "r")
        await worker.poll_once()
        service.stop("lost", "r2")
        drain_queue(stack)
        await worker.backstop_once()
        send_raw(stack, stack.stack_queue_url, cancel_for("x"), dedup="x")
        worker.shutdown()
        assert await worker.poll_once(0) == []  # after shutdown: handed back, not handled
        await worker.aclose()

    worker_calls = {name for name in counter.calls if name not in _stop_route_calls()}
    assert worker_calls <= WORKER_OPERATIONS
    assert {
        "dynamodb.UpdateItem",
        "dynamodb.Query",
        "sqs.ReceiveMessage",
        "sqs.DeleteMessage",
        "sqs.ChangeMessageVisibility",
    } <= worker_calls


def _stop_route_calls() -> set[str]:
    # The stop route's own calls in the same process (its clients carry the same marker).
    return {"secretsmanager.GetSecretValue", "sqs.SendMessage"}


@pytest.mark.anyio
async def test_a_loop_slower_than_the_cleanup_bound_does_not_hold_its_message(
    stack: Stack,
    make_worker: WorkerFactory,
    service: StopService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed(stack, {CONVERSATION: "STARTING"})
    worker = make_worker(cleanup_timeout_seconds=0.1)
    caplog.set_level(logging.INFO, logger="openhands_stop.worker")

    async def slow_to_stop(conversation_id: str) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # a cleanup that outlives the bound

    task = await worker.start(CONVERSATION, slow_to_stop)
    service.stop(CONVERSATION, "r")
    outcomes = await worker.poll_once()
    done_when_deleted = task.done()
    await asyncio.wait({task})

    assert outcomes == [Outcome.STOPPED]
    assert not done_when_deleted
    assert queue_depth(stack, stack.stack_queue_url) == (0, 0)
    [line] = stopped_lines(caplog)
    assert line["cleanup_completed"] is False


@pytest.mark.anyio
async def test_the_backstop_still_stops_loops_when_the_queue_fails(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    seed(stack, {CONVERSATION: "STARTING"})
    missing_queue = stack.stack_queue_url.replace("/cancel", "/no-such-queue")
    worker = make_worker(missing_queue, wait_time_seconds=1, backstop_seconds=0.2)
    agent = Agent()

    async with worker:
        task = await worker.start(CONVERSATION, agent)
        # The claim's queue is not one the route may send to: the cancel goes to the
        # stack queue instead, which this worker does not read.
        service.stop(CONVERSATION, "r")
        await asyncio.wait_for(asyncio.wait({task}), 10)

    assert [c["sid"] for c in drain_queue(stack)] == [CONVERSATION]

    assert agent.cleanups == [CONVERSATION]
