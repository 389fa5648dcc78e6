"""Worker fixtures: a worker on its own fresh queue in the in-process moto stack."""

from __future__ import annotations

import pytest

from local.emulation import Stack
from tests.worker.support import WorkerFactory, create_queue, worker_factory


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
    return worker_factory(stack)
