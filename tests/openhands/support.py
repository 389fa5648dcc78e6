"""Helpers for the OpenHands tests: the real server app in process, its fakes, a client."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeVar

from local.emulation import ROOT, Stack

T = TypeVar("T")


def manager_class_on_the_page() -> str:
    """The ``CONVERSATION_MANAGER_CLASS`` value docs/openhands.md tells operators to set."""
    page = (ROOT / "docs" / "openhands.md").read_text(encoding="utf-8")
    found = re.findall(r"^\| `CONVERSATION_MANAGER_CLASS` \| `([\w.]+)` \|", page, re.MULTILINE)
    if len(found) != 1:
        raise AssertionError("docs/openhands.md must name one CONVERSATION_MANAGER_CLASS value")
    return str(found[0])


MANAGER_CLASS = manager_class_on_the_page()
"""The real OpenHands server in these tests loads the class by the value the page gives."""


WORKER_ID = "openhands-test-server"


# OpenHands' idle reaper: sessions idle this long with no client connected are closed,
# checked every REAPER_INTERVAL_SECONDS (OpenHands: 3600 s and 15 s).
CLOSE_DELAY_SECONDS = 1


REAPER_INTERVAL_SECONDS = 0.25


WORKER_VARIABLES = ("CONVERSATIONS_TABLE_NAME", "CANCEL_QUEUE_URL", "WORKER_QUEUE_PREFIX")


MEASUREMENTS: list[str] = []


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


def fresh_conversation_id() -> str:
    return f"oh{uuid.uuid4().hex}"
