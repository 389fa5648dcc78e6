"""Worker fixtures: a worker on its own fresh queue in the in-process moto stack."""

from __future__ import annotations

from typing import Any

import pytest
from openhands_stop.domain.ports import ClaimTable
from openhands_stop.worker import Worker, WorkerSettings
from openhands_stop.worker.clock import Clock

from local.emulation import Stack
from tests.worker.support import WORKER_ID, WorkerFactory, create_queue


@pytest.fixture(params=["fifo", "standard"])
def worker_queue(stack: Stack, request: pytest.FixtureRequest) -> str:
    """The worker's own queue, FIFO (as the template makes it) or standard."""
    return create_queue(stack, fifo=request.param == "fifo")


@pytest.fixture
def standard_queue(stack: Stack) -> str:
    """A standard queue: no FIFO deduplication, so duplicates really arrive twice."""
    return create_queue(stack, fifo=False)


@pytest.fixture
def make_worker(stack: Stack) -> WorkerFactory:
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
                "cancel_queue_url": queue_url or stack.queue_url,
                "worker_id": WORKER_ID,
                "wait_time_seconds": 0,
                "backstop_seconds": 3600,  # passes are driven by hand: backstop_once()
                "backstop_grace_seconds": 0,
                "cleanup_timeout_seconds": 2,
                "shutdown_grace_seconds": 2,
                **overrides,
            }
        )
        return Worker(settings, table=table, clock=clock)

    return make
