"""Shared fixtures: an emulated stack per test (fresh names), the app, the real handler; and
the tiers' compatibility switch."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from moto import mock_aws
from openhands_stop.edge.app import create_app
from openhands_stop.edge.service import StopService
from openhands_stop.edge.settings import RouteSettings
from openhands_stop.wiring import build_service

from local.atomic_moto import serialize_dynamodb_writes
from local.emulation import (
    AWS_DUMMY_ENV,
    FUNCTION_DIR,
    Stack,
    create_stack,
    moto_server,
    seed,
)
from local.fifo_moto import deliver_unlocked_fifo_groups
from local.invoke import LambdaContext
from tests.support import AwsCallCounter, Invoke, LoadHandler


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported (a missing parent package counts as missing)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


# tests/openhands needs OpenHands 0.53's server (`make test-openhands`), tests/agent_server an
# OpenHands 1.x agent-server (`make test-agent-server`): each lives in a venv of its own.
collect_ignore = [
    folder
    for folder, module in (
        ("openhands", "openhands.server"),
        ("agent_server", "openhands.agent_server"),
    )
    if not _installed(module)
]


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and no real endpoint: nothing a test does can reach AWS."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in AWS_DUMMY_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (``@pytest.mark.anyio``) run on asyncio, each in an event loop of its own."""
    return "asyncio"


@pytest.fixture
def stack() -> Iterator[Stack]:
    """The stack in moto, in process, with fresh resource names (item writes atomic, as in
    DynamoDB: ``local.atomic_moto``; FIFO groups unlock within a long poll, as in SQS:
    ``local.fifo_moto``)."""
    serialize_dynamodb_writes()
    deliver_unlocked_fifo_groups()
    with mock_aws():
        yield create_stack(None, suffix=f"-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's server on 127.0.0.1 for tests that cross the real HTTP wire."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def wire_stack(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """The stack in moto's server, reached over HTTP, with fresh resource names."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return create_stack(moto_endpoint, suffix=f"-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def wire_settings(wire_stack: Stack) -> RouteSettings:
    return RouteSettings.from_environment(wire_stack.function_environment())


@pytest.fixture
def wire_service(wire_settings: RouteSettings) -> StopService:
    return build_service(wire_settings)


@pytest.fixture
def wire_client(wire_service: StopService) -> Iterator[TestClient]:
    """The app, in process, whose AWS calls cross the HTTP wire to moto's server."""
    with TestClient(create_app(wire_service), raise_server_exceptions=True) as client:
        yield client


@pytest.fixture
def settings(stack: Stack) -> RouteSettings:
    return RouteSettings.from_environment(stack.function_environment())


@pytest.fixture
def service(settings: RouteSettings) -> StopService:
    return build_service(settings)


@pytest.fixture
def app(service: StopService) -> FastAPI:
    return create_app(service)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=True) as test_client:
        yield test_client


@pytest.fixture
def seeded(stack: Stack) -> Stack:
    seed(stack)
    return stack


@pytest.fixture
def aws_calls() -> Iterator[AwsCallCounter]:
    with AwsCallCounter() as counter:
        yield counter


@pytest.fixture
def lambda_handler_factory(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoadHandler]:
    """Imports the handler template.yaml names as Lambda does (CodeUri first on sys.path,
    module ``app``), configured only through the environment variables the template sets."""

    def load(stack: Stack) -> Invoke:
        for name, value in stack.function_environment().items():
            monkeypatch.setenv(name, value)
        monkeypatch.syspath_prepend(str(FUNCTION_DIR))
        sys.modules.pop("app", None)
        import app as function_module

        handler = function_module.handler
        return lambda event: handler(event, LambdaContext(aws_request_id=uuid.uuid4().hex))

    yield load
    sys.modules.pop("app", None)


@pytest.fixture
def lambda_handler(stack: Stack, lambda_handler_factory: LoadHandler) -> Invoke:
    """The real handler against the in-process emulation."""
    return lambda_handler_factory(stack)
