"""A real OpenHands 1.x agent-server (``agent-server`` on 127.0.0.1), its agent loop driven by
a fake OpenAI-compatible LLM, this project's sidecar beside it, and the stop route, all
against moto's server. Run with ``make test-agent-server`` (its own venv)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.emulation import AWS_DUMMY_ENV, Stack, create_stack
from tests.agent_server.fake_llm import FakeLlm
from tests.agent_server.support import MEASUREMENTS, AgentServer, Sidecar
from tests.worker.processes import stop_api


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MEASUREMENTS:
        terminalreporter.section("agent-server: measured")
        for line in MEASUREMENTS:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def aws_environment() -> None:
    """Replaces the suite's per-test AWS environment: the route and the sidecar keep, for
    the whole session, moto's endpoint and dummy keys."""


@pytest.fixture(scope="session")
def agent_stack(moto_endpoint: str) -> Iterator[Stack]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**AWS_DUMMY_ENV, "AWS_ENDPOINT_URL": moto_endpoint}.items():
            patch.setenv(name, value)
        yield create_stack(moto_endpoint, suffix=f"-as-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def route(agent_stack: Stack) -> Iterator[str]:
    """The stop route (the Lambda's app) served on 127.0.0.1."""
    with stop_api(agent_stack) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the fake LLM's terminal commands leave their marks."""
    return tmp_path_factory.mktemp("marks")


@pytest.fixture(scope="session")
def fake_llm(files: Path) -> Iterator[FakeLlm]:
    llm = FakeLlm(files).start()
    yield llm
    llm.stop()


@pytest.fixture(scope="session")
def agent_server(
    fake_llm: FakeLlm, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentServer]:
    server = AgentServer(tmp_path_factory.mktemp("agent-server"), fake_llm.base_url).start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def sidecar(agent_stack: Stack, agent_server: AgentServer) -> Iterator[Sidecar]:
    process = Sidecar(agent_stack, agent_server, "agent-server-sidecar")
    yield process
    assert process.terminate() == 0
