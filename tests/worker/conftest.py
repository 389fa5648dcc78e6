"""Worker fixtures: a worker on its own fresh queue in the in-process moto stack."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
from openhands_stop.domain.ports import ClaimTable
from openhands_stop.worker import Worker, WorkerSettings

from local.emulation import Stack

T = TypeVar("T")

WORKER_ID = "worker-test-1"


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def queue_depth(stack: Stack, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages on the queue: deleted ones count in neither."""
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def create_queue(stack: Stack, *, fifo: bool) -> str:
    name = f"{stack.worker_queue_prefix}{uuid.uuid4().hex[:8]}"
    attributes: dict[str, str] = {"FifoQueue": "true"} if fifo else {}
    url: str = stack.client("sqs").create_queue(
        QueueName=f"{name}.fifo" if fifo else name, Attributes=attributes
    )["QueueUrl"]
    return url


@pytest.fixture(params=["fifo", "standard"])
def worker_queue(stack: Stack, request: pytest.FixtureRequest) -> str:
    """The worker's own queue, FIFO (as the template makes it) or standard."""
    return create_queue(stack, fifo=request.param == "fifo")


@pytest.fixture
def standard_queue(stack: Stack) -> str:
    """A standard queue: no FIFO deduplication, so duplicates really arrive twice."""
    return create_queue(stack, fifo=False)


WorkerFactory = Callable[..., Worker]


@pytest.fixture
def make_worker(stack: Stack) -> WorkerFactory:
    def make(
        queue_url: str | None = None, *, table: ClaimTable | None = None, **overrides: Any
    ) -> Worker:
        settings = WorkerSettings.model_validate(
            {
                "table_name": stack.table_name,
                "cancel_queue_url": queue_url or stack.queue_url,
                "worker_id": WORKER_ID,
                "wait_time_seconds": 0,
                "backstop_seconds": 0,
                "backstop_grace_seconds": 0,
                "cleanup_timeout_seconds": 2,
                "shutdown_grace_seconds": 2,
                **overrides,
            }
        )
        return Worker(settings, table=table)

    return make
