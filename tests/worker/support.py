"""Helpers for the worker tests: queues, messages, an agent loop that records its runs."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from openhands_stop.aws.claims import DynamoClaimTable
from openhands_stop.aws.clients import dynamodb_client
from openhands_stop.domain.models import CancelMessage, utc_now
from openhands_stop.domain.ports import ClaimResult, ClaimTable
from openhands_stop.wiring import build_worker
from openhands_stop.worker import Worker, WorkerSettings
from openhands_stop.worker.clock import Clock

from local.emulation import Stack

WORKER_ID = "worker-test-1"

WorkerFactory = Callable[..., Worker]
"""The ``make_worker`` fixture: a worker on a queue (the stack's unless given), settings
overridden by keyword."""


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
    name = f"{stack.worker_queue_prefix}{uuid.uuid4().hex[:12]}"
    attributes: dict[str, str] = {"FifoQueue": "true"} if fifo else {}
    url: str = stack.client("sqs").create_queue(
        QueueName=f"{name}.fifo" if fifo else name, Attributes=attributes
    )["QueueUrl"]
    return url


@dataclass
class Agent:
    """An agent loop that runs until cancelled and records its start and its cleanup."""

    runs: list[str] = field(default_factory=list)
    cleanups: list[str] = field(default_factory=list)

    async def __call__(self, conversation_id: str) -> None:
        self.runs.append(conversation_id)
        try:
            await asyncio.Event().wait()
        finally:
            self.cleanups.append(conversation_id)


def send_raw(stack: Stack, queue_url: str, body: str, dedup: str = "d") -> None:
    extra: dict[str, Any] = (
        {"MessageGroupId": dedup, "MessageDeduplicationId": dedup}
        if queue_url.endswith(".fifo")
        else {}
    )
    stack.client("sqs").send_message(QueueUrl=queue_url, MessageBody=body, **extra)


def cancel_for(conversation_id: str, stop_id: str = "stop-1", run_id: str | None = None) -> str:
    return CancelMessage(
        sid=conversation_id,
        stop_id=stop_id,
        request_id="req-1",
        requested_at=utc_now(),
        run_id=run_id,
    ).model_dump_json()


def stopped_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "openhands_stop.worker" and r.getMessage() == "conversation_stopped"
    ]


async def wait_until_logged(
    caplog: pytest.LogCaptureFixture, event: str, seconds: float = 15.0
) -> None:
    """Until the worker has logged ``event`` (a deadline, not a timing: it fails only if the
    event never comes)."""
    for _ in range(int(seconds / 0.05)):
        if any(
            r.name == "openhands_stop.worker" and r.getMessage() == event for r in caplog.records
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the worker never logged {event}")


class ClaimAnswerHeld(DynamoClaimTable):
    """A claim table whose claim, once written, holds its answer until ``proceed`` is set
    (``claimed`` is set meanwhile): what the worker does while its claim is in flight."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(dynamodb_client(), stack.table_name)
        self.claimed = threading.Event()
        self.proceed = threading.Event()

    def claim(self, *args: Any, **kwargs: Any) -> ClaimResult:
        result = super().claim(*args, **kwargs)
        self.claimed.set()
        self.proceed.wait(5)
        return result


def worker_factory(stack: Stack) -> WorkerFactory:
    """Workers on ``stack``: the stack queue unless given, passes driven by hand."""

    def make(
        queue_url: str | None = None,
        *,
        table: ClaimTable | None = None,
        clock: Clock | None = None,
        **overrides: Any,
    ) -> Worker:
        settings = WorkerSettings.model_validate(
            {
                "table_name": stack.table_name,
                "stack_queue_url": queue_url or stack.stack_queue_url,
                "worker_id": WORKER_ID,
                "wait_time_seconds": 0,
                "backstop_seconds": 3600,  # passes are driven by hand: backstop_once()
                "backstop_grace_seconds": 0,
                "cleanup_timeout_seconds": 2,
                "shutdown_grace_seconds": 2,
                **overrides,
            }
        )
        return build_worker(settings, table=table, clock=clock)

    return make
