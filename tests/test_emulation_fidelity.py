"""The emulation behaves as AWS does where the product depends on it: a FIFO long poll in
flight receives a message of a group that unlocks during its wait (``local.fifo_moto``),
and a group stays locked while its message is in flight."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from moto.sqs.models import sqs_backends

from local.emulation import REGION, Stack

GROUP = "conversation-g"
OTHER_GROUP = "conversation-h"
ENOUGH = 60
"""Seconds before a broken run gives up waiting (never reached when the test passes)."""


class _Announcing(threading.Condition):
    """A queue's condition that says when a receive starts waiting on it (moto's own long
    poll waits with ``wait_for``, ``local.fifo_moto``'s with ``wait``)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        self.waiting.set()
        return super().wait_for(predicate, timeout)


@pytest.fixture
def queue(wire_stack: Stack) -> _Announcing:
    """The condition of the stack queue in moto's server (in this process)."""
    account, name = wire_stack.stack_queue_url.rsplit("/", 2)[1:]
    moto_queue = sqs_backends[account][REGION].get_queue(name)
    condition = _Announcing()
    moto_queue._messages_lock = condition
    return condition


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as executor:
        yield executor


def _send(sqs: Any, stack: Stack, body: str, group: str = GROUP) -> None:
    sqs.send_message(
        QueueUrl=stack.stack_queue_url,
        MessageBody=body,
        MessageGroupId=group,
        MessageDeduplicationId=uuid.uuid4().hex,
    )


def _receive(sqs: Any, stack: Stack, count: int = 10) -> list[dict[str, Any]]:
    """One receive at the worker's long poll (20 s)."""
    answer = sqs.receive_message(
        QueueUrl=stack.stack_queue_url, WaitTimeSeconds=20, MaxNumberOfMessages=count
    )
    messages: list[dict[str, Any]] = answer.get("Messages", [])
    return messages


def _long_poll_waiting(
    sqs: Any, stack: Stack, queue: _Announcing, pool: ThreadPoolExecutor
) -> Future[list[dict[str, Any]]]:
    """A long poll, once moto's server has it waiting for a message it may deliver."""
    queue.waiting.clear()
    poll = pool.submit(_receive, sqs, stack)
    assert queue.waiting.wait(ENOUGH)
    assert not poll.done()
    return poll


def _bodies(messages: list[dict[str, Any]]) -> list[str]:
    return [message["Body"] for message in messages]


def test_a_group_unlocked_by_a_delete_is_delivered_within_the_poll(
    wire_stack: Stack, queue: _Announcing, pool: ThreadPoolExecutor
) -> None:
    sqs = wire_stack.client("sqs")
    _send(sqs, wire_stack, "cancel A")
    [cancel_a] = _receive(sqs, wire_stack)

    poll = _long_poll_waiting(sqs, wire_stack, queue, pool)
    sqs.delete_message(QueueUrl=wire_stack.stack_queue_url, ReceiptHandle=cancel_a["ReceiptHandle"])
    _send(sqs, wire_stack, "cancel B")

    # The poll already waiting returns with B, not empty at the end of its wait.
    assert _bodies(poll.result(ENOUGH)) == ["cancel B"]


def test_a_group_unlocked_by_a_visibility_of_zero_is_redelivered_in_order_within_the_poll(
    wire_stack: Stack, queue: _Announcing, pool: ThreadPoolExecutor
) -> None:
    sqs = wire_stack.client("sqs")
    _send(sqs, wire_stack, "first")
    _send(sqs, wire_stack, "second")
    [first] = _receive(sqs, wire_stack, count=1)

    poll = _long_poll_waiting(sqs, wire_stack, queue, pool)
    sqs.change_message_visibility(
        QueueUrl=wire_stack.stack_queue_url,
        ReceiptHandle=first["ReceiptHandle"],
        VisibilityTimeout=0,
    )

    assert _bodies(poll.result(ENOUGH)) == ["first", "second"]


def test_a_group_stays_locked_while_its_message_is_in_flight(
    wire_stack: Stack, queue: _Announcing, pool: ThreadPoolExecutor
) -> None:
    sqs = wire_stack.client("sqs")
    _send(sqs, wire_stack, "first")
    _send(sqs, wire_stack, "second")
    [first] = _receive(sqs, wire_stack, count=1)
    assert first["Body"] == "first"

    # A poll waiting while "first" is in flight: another group's message wakes it, and it
    # gets that message alone, never "second".
    poll = _long_poll_waiting(sqs, wire_stack, queue, pool)
    _send(sqs, wire_stack, "other", group=OTHER_GROUP)
    assert _bodies(poll.result(ENOUGH)) == ["other"]

    # Once "first" is deleted, "second" is next.
    sqs.delete_message(QueueUrl=wire_stack.stack_queue_url, ReceiptHandle=first["ReceiptHandle"])
    assert _bodies(_receive(sqs, wire_stack)) == ["second"]
