"""A fleet worker's own queue: made like the stack's, recorded by claims, never left behind."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from openhands_stop.aws.clients import long_poll_sqs_client
from openhands_stop.aws.worker_queues import WorkerQueues
from openhands_stop.aws.worker_roster import DynamoWorkerRoster
from openhands_stop.edge.service import StopService
from openhands_stop.worker import Outcome, Worker

from local.emulation import Stack, load_template, seed
from tests.support import AwsCallCounter, read_record
from tests.worker.support import Agent, ClaimAnswerHeld, WorkerFactory, cancel_for, send_raw


def fleet_worker(make_worker: WorkerFactory, stack: Stack, **overrides: Any) -> Worker:
    """A worker configured as every worker of the fleet is: the stack queue and prefix."""
    return make_worker(
        stack.stack_queue_url, worker_queue_prefix=stack.worker_queue_prefix, **overrides
    )


def queues_under_prefix(stack: Stack) -> list[str]:
    found: list[str] = (
        stack.client("sqs")
        .list_queues(QueueNamePrefix=stack.worker_queue_prefix)
        .get("QueueUrls", [])
    )
    return found


def attributes(stack: Stack, url: str) -> dict[str, str]:
    found: dict[str, str] = stack.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["All"]
    )["Attributes"]
    return found


@pytest.mark.anyio
async def test_a_fleet_worker_makes_its_own_queue_routes_its_runs_there_and_deletes_it(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    seed(stack, {"mine": "STARTING"})
    worker = fleet_worker(make_worker, stack)

    await worker.open()
    own = worker.queue_url
    await worker.start("mine", Agent())
    service.stop("mine", "r")
    outcomes = await worker.poll_once()
    await worker.aclose()

    assert own.rsplit("/", 1)[1].startswith(stack.worker_queue_prefix)
    assert own.endswith(".fifo")
    assert outcomes == [Outcome.STOPPED]
    assert read_record(stack, "mine")["cancel_queue_url"] == own  # type: ignore[index]
    assert queues_under_prefix(stack) == []  # a clean shutdown leaves nothing behind


@pytest.mark.anyio
async def test_the_workers_queue_is_shaped_like_the_stacks_with_its_policy_rewritten(
    stack: Stack, make_worker: WorkerFactory
) -> None:
    sqs = stack.client("sqs")
    stack_arn = attributes(stack, stack.stack_queue_url)["QueueArn"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "OnlyTheStopFunctionSends",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:SendMessage",
                "Resource": stack_arn,
                "Condition": {"ArnNotEquals": {"aws:PrincipalArn": "arn:aws:iam::1:role/f"}},
            }
        ],
    }
    sqs.set_queue_attributes(
        QueueUrl=stack.stack_queue_url,
        Attributes={"Policy": json.dumps(policy), "VisibilityTimeout": "45"},
    )
    worker = fleet_worker(make_worker, stack)

    await worker.open()
    own = worker.queue_url

    mine = attributes(stack, own)
    theirs = attributes(stack, stack.stack_queue_url)
    assert mine["FifoQueue"] == "true"
    assert mine["VisibilityTimeout"] == "45"
    assert json.loads(mine["RedrivePolicy"]) == json.loads(theirs["RedrivePolicy"])
    [statement] = json.loads(mine["Policy"])["Statement"]
    assert statement["Resource"] == mine["QueueArn"]
    assert statement["Condition"] == policy["Statement"][0]["Condition"]  # type: ignore[index]
    # Set at CreateQueue: the worker policy grants no SetQueueAttributes.
    assert own.rsplit("/", 1)[1] == f"{stack.worker_queue_prefix}{worker.instance}.fifo"


@pytest.mark.anyio
async def test_at_start_queues_without_a_live_worker_are_swept_and_others_kept(
    stack: Stack, make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sqs = stack.client("sqs")
    fifo = {"FifoQueue": "true"}
    prefix = stack.worker_queue_prefix

    def queue(name: str) -> str:
        url: str = sqs.create_queue(QueueName=f"{prefix}{name}.fifo", Attributes=fifo)["QueueUrl"]
        return url

    peer = fleet_worker(make_worker, stack)
    await peer.open()
    unowned = queue("0123456789ab")  # its worker died before liveness items, say
    not_a_worker_queue = queue("by-hand")  # under the prefix, but no worker's name
    caplog.set_level(logging.INFO, logger="openhands_stop.worker")
    worker = fleet_worker(make_worker, stack)

    await worker.open()

    assert sorted(queues_under_prefix(stack)) == sorted(
        [peer.queue_url, not_a_worker_queue, worker.queue_url]
    )
    [swept] = [r.fields for r in caplog.records if r.getMessage() == "unowned_queue_deleted"]  # type: ignore[attr-defined]
    assert swept["queue_url"] == unowned


@pytest.mark.anyio
async def test_a_queue_deleted_under_a_live_worker_is_made_again_and_its_runs_follow(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    seed(stack, {"before": "STARTING", "after": "STARTING"})
    worker = fleet_worker(make_worker, stack)

    await worker.open()
    first = worker.queue_url
    before = await worker.start("before", Agent())
    stack.client("sqs").delete_queue(QueueUrl=first)
    assert await worker.poll_once(0) == []  # NonExistentQueue: a new queue, at once
    second = worker.queue_url
    after = await worker.start("after", Agent())
    service.stop("before", "r1")
    service.stop("after", "r2")
    outcomes = await worker.poll_once()
    if len(outcomes) < 2:
        outcomes += await worker.poll_once()
    await worker.aclose()

    assert second != first
    assert sorted(outcomes) == [Outcome.STOPPED, Outcome.STOPPED]  # both via the new queue
    assert before.cancelled()
    assert after.cancelled()
    for conversation_id in ("before", "after"):
        record = read_record(stack, conversation_id)
        assert record is not None
        assert record["cancel_queue_url"] == second
        assert record["loop_stopped_via"] == "queue"


@pytest.mark.anyio
async def test_a_queue_deleted_with_its_instance_declared_dead_halts_its_runs_and_rejoins_once(
    stack: Stack, make_worker: WorkerFactory
) -> None:
    # After a hang: a peer declared the instance dead, released its runs and deleted its
    # queue. Whether the poller (NonExistentQueue) or the beat notices first, the runs are
    # halted as released, and the worker joins again once (make fleet's hung worker).
    seed(stack, {"held": "STARTING"})
    worker = fleet_worker(make_worker, stack)
    roster = DynamoWorkerRoster(stack.client("dynamodb"), stack.table_name)

    await worker.open()
    first, instance = worker.queue_url, worker.instance
    held = await worker.start("held", Agent())
    member = roster.member(instance)
    assert member is not None
    assert roster.declare_dead(instance, observed_beat=member.beat, judge="peer")
    stack.client("sqs").delete_queue(QueueUrl=first)
    assert await worker.poll_once(0) == []  # NonExistentQueue: it learns it was declared
    second = worker.queue_url
    await worker._liveness.queue_missing(first)  # a second notice of the same queue
    third = worker.queue_url
    await worker.aclose()

    assert second != first
    assert third == second  # joined again once, not twice
    assert held.cancelled()  # halted: its run had been released


@pytest.mark.anyio
async def test_a_fleet_worker_drains_the_stack_queue_and_acts_only_on_its_own_runs(
    stack: Stack, make_worker: WorkerFactory
) -> None:
    """Cancels whose run's queue was unknown or gone land on the stack queue."""
    seed(stack, {"here": "STARTING"})
    worker = fleet_worker(make_worker, stack)

    await worker.start("here", Agent())
    run_id = worker.run_id("here")
    body = json.loads(cancel_for("here"))
    send_raw(stack, stack.stack_queue_url, json.dumps({**body, "run_id": run_id}), "a")
    send_raw(stack, stack.stack_queue_url, cancel_for("elsewhere", stop_id="s2"), "b")
    outcomes = await worker.poll_stack_queue_once(0)
    await worker.aclose()

    assert sorted(outcomes) == sorted([Outcome.STOPPED, Outcome.NOT_OURS])


def test_a_prefix_too_long_for_a_queue_name_is_refused() -> None:
    with pytest.raises(ValueError, match="WORKER_QUEUE_PREFIX"):
        WorkerQueues(long_poll_sqs_client(), "https://q", "x" * 70)


@pytest.mark.anyio
async def test_a_fleet_worker_calls_only_what_the_templates_worker_policy_allows(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    """Every operation, through the whole lifecycle, against the policy the stack deploys."""
    statements = load_template()["Resources"]["AgentWorkerPolicy"]["Properties"]["PolicyDocument"][
        "Statement"
    ]
    granted = {action for s in statements for action in _as_list(s["Action"])}
    seed(stack, {"stopped": "STARTING", "backstopped": "STARTING"})
    worker = fleet_worker(make_worker, stack)

    with AwsCallCounter() as counter:
        await worker.register("new")
        await worker.start("stopped", Agent())
        await worker.start("backstopped", Agent())
        service.stop("stopped", "r")
        await worker.poll_once()
        await worker.poll_stack_queue_once(0)
        service.stop("backstopped", "r2")
        await worker.backstop_once()
        await worker.beat_once()
        await worker.judge_once()
        await worker.aclose()
    route = {"secretsmanager.GetSecretValue", "sqs.SendMessage"}
    used = {
        f"{name.split('.')[0]}:{name.split('.')[1]}" for name in counter.calls if name not in route
    }
    assert used <= granted, used - granted
    assert {
        "sqs:CreateQueue",
        "sqs:DeleteQueue",
        "sqs:ListQueues",
        "dynamodb:Query",
        "dynamodb:DeleteItem",
    } <= used
    # No worker can rewrite a peer queue's policy, nor needs tags.
    assert not {"sqs:SetQueueAttributes", "sqs:TagQueue", "sqs:ListQueueTags"} & granted


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.anyio
async def test_a_claim_in_flight_while_the_queue_is_made_again_follows_the_new_queue(
    stack: Stack, make_worker: WorkerFactory, service: StopService
) -> None:
    """The claim lands under the instance the worker just left: it is moved too, so its stop
    comes via the new queue and no peer releases it with the old instance."""
    seed(stack, {"late": "STARTING"})
    held = ClaimAnswerHeld(stack)
    worker = fleet_worker(make_worker, stack, table=held)
    await worker.open()
    first = worker.queue_url
    starting = asyncio.create_task(worker.start("late", Agent()))
    await asyncio.to_thread(held.claimed.wait, 5)
    stack.client("sqs").delete_queue(QueueUrl=first)
    assert await worker.poll_once(0) == []  # a new queue and instance, while the claim waits
    held.proceed.set()
    task = await starting
    service.stop("late", "r")
    outcomes = await worker.poll_once()
    await worker.aclose()

    record = read_record(stack, "late")
    assert record is not None
    assert record["cancel_queue_url"] != first
    assert outcomes == [Outcome.STOPPED]
    assert task.cancelled()
