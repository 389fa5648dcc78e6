"""Fixtures for the reliability suites: the service over moto's server with faults injected,
the app on a real uvicorn socket, Hypothesis profiles, and the evidence each test records.

Every test records its measured outcome with ``evidence(family, case, outcome)``: the
``make reliability`` runner reads those (JUnit XML properties) and writes docs/reliability.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from botocore.retries import standard
from openhands_stop.edge.app import create_app
from openhands_stop.edge.service import StopService
from openhands_stop.edge.settings import RouteSettings
from openhands_stop.wiring import build_service

from local.emulation import Stack
from tests.reliability.faults import FaultInjector, watch_service
from tests.reliability.support import Evidence, LiveServer
from tests.worker.support import WorkerFactory, worker_factory


@pytest.fixture
def evidence(record_property: Callable[[str, object], None]) -> Evidence:
    """Record what a test measured, for the generated reliability report."""

    def record(family: str, case: str, outcome: str) -> None:
        record_property("family", family)
        record_property("case", case)
        record_property("outcome", outcome)

    return record


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore still retries (and counts attempts), without sleeping between them: the
    backoff is bounded by test_retry_budget, not by waiting for it here."""
    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, ctx: 0)


@pytest.fixture
def faults(wire_service: StopService, no_backoff: None) -> FaultInjector:
    """Faults on the three dependencies of ``wire_service``."""
    return watch_service(wire_service)


@pytest.fixture
def live_servers(wire_settings: RouteSettings) -> Iterator[Callable[[int], list[LiveServer]]]:
    """``n`` servers, each with its own service: like ``n`` warm Lambda instances."""
    started: list[LiveServer] = []

    def start(n: int) -> list[LiveServer]:
        for _ in range(n):
            server = LiveServer(create_app(build_service(wire_settings)))
            started.append(server.__enter__())
        return started[-n:]

    yield start
    for server in started:
        server.__exit__()


@pytest.fixture
def make_wire_worker(wire_stack: Stack) -> WorkerFactory:
    """Workers on the stack served by moto's server (where faults can be injected)."""
    return worker_factory(wire_stack)
