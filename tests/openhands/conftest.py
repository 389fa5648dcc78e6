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

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.emulation import AWS_DUMMY_ENV, create_stack, free_port
from tests.openhands.support import (
    CLOSE_DELAY_SECONDS,
    MANAGER_CLASS,
    MEASUREMENTS,
    REAPER_INTERVAL_SECONDS,
    WORKER_ID,
    WORKER_VARIABLES,
    OpenHandsServer,
    _fake_initialize_agent,
    wait_until,
)
from tests.support import read_record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MEASUREMENTS:
        terminalreporter.section("openhands: measured")
        for line in MEASUREMENTS:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def aws_environment() -> None:
    """Replaces the suite's per-test AWS environment: the server's worker keeps, for the
    whole session, the one set when the server started (moto's endpoint, dummy keys)."""


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
        # and acts on its first pass (the grace is for cancels in flight; this one is lost)
        "BACKSTOP_GRACE_SECONDS": "0",
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
