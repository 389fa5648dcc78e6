"""A real OpenHands 0.53 server, in process, with this project's conversation manager.

What is OpenHands' own: the server app (``openhands.server.listen:app``: FastAPI, socket.io,
its middleware and lifespan, run by uvicorn on 127.0.0.1), the manager it loads from
``CONVERSATION_MANAGER_CLASS`` (``StopAwareConversationManager``, a subclass of its
standalone manager), ``Session``, ``AgentSession``, ``close_session``, the idle reaper, the
event stream and the file store. What is faked: ``Session.initialize_agent`` alone, which
would build an LLM, an agent controller and a sandbox runtime; the fake gives the real
``AgentSession`` a controller and a runtime that record what ``AgentSession.close()`` does
to them (save the state, set the agent STOPPED, start the runtime's shutdown).

AWS is moto's server on 127.0.0.1. Run with ``make test-openhands`` (its own venv).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import httpx
import pytest

from local.emulation import AWS_DUMMY_ENV, Stack, create_stack, free_port
from tests.support import read_record

T = TypeVar("T")

MANAGER_CLASS = "openhands_stop.integrations.openhands.StopAwareConversationManager"
WORKER_ID = "openhands-test-server"
# OpenHands' idle reaper: sessions idle this long with no client connected are closed,
# checked every REAPER_INTERVAL_SECONDS (OpenHands: 3600 s and 15 s).
CLOSE_DELAY_SECONDS = 1
REAPER_INTERVAL_SECONDS = 0.25

WORKER_VARIABLES = ("CONVERSATIONS_TABLE_NAME", "CANCEL_QUEUE_URL", "WORKER_QUEUE_PREFIX")

MEASUREMENTS: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MEASUREMENTS:
        terminalreporter.section("openhands: measured")
        for line in MEASUREMENTS:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def aws_environment() -> None:
    """Replaces the suite's per-test AWS environment: the server's worker keeps, for the
    whole session, the one set when the server started (moto's endpoint, dummy keys)."""


class FakeController:
    """Stands in for ``AgentController`` (which needs an LLM): the state OpenHands reads
    (``get_state``, the idle reaper) and the two calls ``AgentSession.close()`` makes."""

    def __init__(self, agent_state: Any) -> None:
        self.state = SimpleNamespace(agent_state=agent_state)
        self.state_saved = False
        self.closed_at: float | None = None

    def save_state(self) -> None:
        self.state_saved = True

    async def close(self, set_stop_state: bool = True) -> None:
        from openhands.core.schema import AgentState

        if set_stop_state:
            self.state.agent_state = AgentState.STOPPED
        self.closed_at = time.monotonic()


class FakeRuntime:
    """Stands in for a sandbox runtime: initialized, and records its shutdown."""

    runtime_initialized = True
    runtime_status = None

    def __init__(self) -> None:
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()


@dataclass
class OpenHandsServer:
    base_url: str
    stack: Stack
    manager: Any  # StopAwareConversationManager, OpenHands' conversation_manager
    sessions: dict[str, Any] = field(default_factory=dict)  # sid -> the latest real Session

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 15) -> T:
        """Run a coroutine on the server's event loop (where the manager lives)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.manager._loop).result(timeout)

    def running(self) -> set[str]:
        """OpenHands' own answer: the manager's running agent loops."""
        loops: set[str] = self.call(self.manager.get_running_agent_loops())
        return loops

    def connect(self, sid: str) -> SocketClient:
        """Join the conversation over socket.io, as OpenHands' UI does: this starts its loop."""
        return SocketClient.open(self.base_url, sid)


@dataclass
class SocketClient:
    client: Any  # socketio.Client
    events: list[dict[str, Any]] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def open(cls, base_url: str, sid: str) -> SocketClient:
        import socketio

        opened = cls(socketio.Client(reconnection=False))
        opened.client.on("oh_event", opened.events.append)
        opened.client.on("disconnect", lambda *_: opened.disconnected.set())
        opened.client.connect(
            f"{base_url}?conversation_id={sid}&latest_event_id=-1",
            transports=["websocket"],
            wait_timeout=10,
        )
        return opened

    def close(self) -> None:
        self.client.disconnect()


def wait_until(condition: Callable[[], bool], timeout: float = 10, every: float = 0.01) -> float:
    """Poll until true; returns the monotonic time it was first seen true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(every)
    raise AssertionError(f"not true within {timeout} s")


def _fake_initialize_agent(sessions: dict[str, Any]) -> Callable[..., Coroutine[Any, Any, None]]:
    async def initialize_agent(
        self: Any, settings: Any, initial_message: Any, replay_json: Any
    ) -> None:
        from openhands.core.schema import AgentState
        from openhands.events.event import EventSource
        from openhands.events.observation import AgentStateChangedObservation

        agent_session = self.agent_session
        agent_session._started_at = time.time()
        agent_session.controller = FakeController(AgentState.AWAITING_USER_INPUT)
        agent_session.runtime = FakeRuntime()
        sessions[self.sid] = self
        agent_session.event_stream.add_event(
            AgentStateChangedObservation("", AgentState.AWAITING_USER_INPUT),
            EventSource.ENVIRONMENT,
        )

    return initialize_agent


@pytest.fixture(scope="session")
def openhands_server(
    moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpenHandsServer]:
    stack = create_stack(moto_endpoint, suffix=f"-oh-{uuid.uuid4().hex[:8]}")
    files: Path = tmp_path_factory.mktemp("openhands-files")
    environment = {
        **AWS_DUMMY_ENV,
        "AWS_ENDPOINT_URL": moto_endpoint,
        # OpenHands: this project's manager; files on disk; no frontend; offline LiteLLM.
        "CONVERSATION_MANAGER_CLASS": MANAGER_CLASS,
        "FILE_STORE": "local",
        "FILE_STORE_PATH": str(files),
        "SERVE_FRONTEND": "false",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "SANDBOX_CLOSE_DELAY": str(CLOSE_DELAY_SECONDS),
        # The worker: the stack's table, queue (and a fleet's queue prefix), as its outputs
        # give them to every worker, and the function alike.
        **{
            name: value
            for name, value in stack.function_environment().items()
            if name in WORKER_VARIABLES
        },
        "WORKER_ID": WORKER_ID,
        "WAIT_TIME_SECONDS": "1",  # a poll returns on arrival anyway; this bounds shutdown
        "BACKSTOP_SECONDS": "600",  # the backstop test runs it by hand: no race with the queue
        "CLEANUP_TIMEOUT_SECONDS": "5",
        "SHUTDOWN_GRACE_SECONDS": "3",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        patch.delenv("SESSION_API_KEY", raising=False)

        import uvicorn
        from openhands.server.conversation_manager import standalone_conversation_manager
        from openhands.server.session.session import Session

        sessions: dict[str, Any] = {}
        patch.setattr(Session, "initialize_agent", _fake_initialize_agent(sessions))
        patch.setattr(standalone_conversation_manager, "_CLEANUP_INTERVAL", REAPER_INTERVAL_SECONDS)

        from openhands.server.listen import app
        from openhands.server.shared import conversation_manager

        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        thread = threading.Thread(target=server.run, name="openhands-server", daemon=True)
        thread.start()
        wait_until(lambda: server.started, timeout=60)
        base_url = f"http://127.0.0.1:{port}"
        stored = httpx.post(
            f"{base_url}/api/settings",
            json={"llm_model": "fake/no-llm", "llm_api_key": "unused"},
            timeout=10,
        )
        assert stored.status_code == 200, stored.text
        handle = OpenHandsServer(base_url, stack, conversation_manager, sessions)
        try:
            yield handle
        finally:
            left = handle.running()
            server.should_exit = True
            thread.join(30)
            assert not thread.is_alive(), "the OpenHands server did not shut down"
        # Sessions still open when the server stops go with it: none stays RUNNING.
        assert left, "a test leaves a conversation running to check this"
        for sid in left:
            row = read_record(stack, sid)
            assert row is not None
            assert row["status"] == "STOPPED", row
            assert row["loop_stopped_via"] in ("worker_shutdown", "host"), row
            assert sessions[sid].agent_session.is_closed()


def fresh_conversation_id() -> str:
    return f"oh{uuid.uuid4().hex}"
