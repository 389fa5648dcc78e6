"""Fixtures for the reliability suites: the service over moto's server with faults injected,
the app on a real uvicorn socket, Hypothesis profiles, and the evidence each test records.

Every test records its measured outcome with ``evidence(family, case, outcome)``: the
``make reliability`` runner reads those (JUnit XML properties) and writes docs/reliability.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import uvicorn
from botocore.retries import standard
from fastapi import FastAPI
from openhands_stop.edge.app import create_app
from openhands_stop.edge.service import StopService
from openhands_stop.edge.settings import Settings
from openhands_stop.wiring import build_service

from local.emulation import free_port
from tests.reliability.faults import FaultInjector, watch_service
from tests.reliability.profile import FULL


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "full_only: runs only in `make reliability`")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if FULL:
        return
    skip = pytest.mark.skip(reason="long: runs in `make reliability` (RELIABILITY_FULL=1)")
    for item in items:
        if "full_only" in item.keywords:
            item.add_marker(skip)


Evidence = Callable[[str, str, str], None]


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


class LiveServer:
    """The app on uvicorn, on a free 127.0.0.1 port, in a thread."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture
def live_servers(wire_settings: Settings) -> Iterator[Callable[[int], list[LiveServer]]]:
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
