"""Helpers for the agent-server tests: a real ``agent-server`` process, this project's sidecar
process, and a client for both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from local.emulation import AWS_DUMMY_ENV, Stack, free_port

AGENT_SERVER_KEY = "agent-server-test-key"

WORKER_VARIABLES = ("CONVERSATIONS_TABLE_NAME", "CANCEL_QUEUE_URL", "WORKER_QUEUE_PREFIX")

# Liveness short enough for a test to see a dead sidecar released (docs/worker.md).
HEARTBEAT_SECONDS = 0.5
ORPHAN_SECONDS = 2.0

MEASUREMENTS: list[str] = []

BIN = Path(sys.executable).parent


def wait_until(condition: Callable[[], Any], timeout: float = 30, every: float = 0.02) -> Any:
    """Poll until truthy; returns that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not true within {timeout} s")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (its parent has not reaped it yet).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class AgentServer:
    """``agent-server --host 127.0.0.1 --port P`` with its folders under ``root``."""

    root: Path
    llm_url: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AgentServer:
        (self.root / "conversations").mkdir(parents=True, exist_ok=True)
        (self.root / "workspace").mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "SESSION_API_KEY": AGENT_SERVER_KEY,
            "OH_CONVERSATIONS_PATH": str(self.root / "conversations"),
            "OH_WORKSPACE_PATH": str(self.root / "workspace"),
            "OH_ENABLE_VSCODE": "false",
            "OH_ENABLE_BROWSER": "false",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        env.pop("AWS_ENDPOINT_URL", None)
        log = (self.root / "agent-server.log").open("a")
        self.process = subprocess.Popen(
            [str(BIN / "agent-server"), "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        wait_until(self._healthy, timeout=90, every=0.2)
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, (self.root / "agent-server.log").read_text()[-3000:]
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL the server's whole process group (its terminals too)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    # -- its API ----------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.url}{path}",
            headers={"X-Session-API-Key": AGENT_SERVER_KEY},
            timeout=60,
            **kwargs,
        )

    def create(self, script: str, *, tags: Mapping[str, str] | None = None) -> str:
        """A conversation whose first message is the fake LLM's script, run at once; its
        agent-server id."""
        body = {
            "agent": {
                "kind": "Agent",
                "llm": {
                    "model": "openai/fake-agent",
                    "base_url": self.llm_url,
                    "api_key": "unused",
                    "native_tool_calling": True,
                    "num_retries": 0,
                    "usage_id": "agent",
                },
                # The subprocess terminal: tmux's reports a `a && b` chain done early here.
                "tools": [{"name": "terminal", "params": {"terminal_type": "subprocess"}}],
            },
            "workspace": {"working_dir": str(self.root / "workspace")},
            "initial_message": {
                "role": "user",
                "content": [{"type": "text", "text": script}],
                "run": True,
            },
            "tags": dict(tags or {}),
        }
        response = self.request("POST", "/api/conversations", json=body)
        assert response.status_code in (200, 201), response.text
        return str(response.json()["id"])

    def status(self, agent_id: str) -> str | None:
        response = self.request("GET", f"/api/conversations/{agent_id}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return str(response.json()["execution_status"])

    def run(self, agent_id: str) -> None:
        response = self.request("POST", f"/api/conversations/{agent_id}/run")
        assert response.status_code == 200, response.text

    def send(self, agent_id: str, text: str) -> None:
        response = self.request(
            "POST",
            f"/api/conversations/{agent_id}/events",
            json={"role": "user", "content": [{"type": "text", "text": text}], "run": True},
        )
        assert response.status_code == 200, response.text


class Sidecar:
    """``python -m openhands_stop.integrations.agent_server``, its JSON log lines collected."""

    def __init__(self, stack: Stack, server: AgentServer, worker_id: str, **extra: str) -> None:
        env = {
            **os.environ,
            **AWS_DUMMY_ENV,
            **{k: v for k, v in stack.function_environment().items() if k in WORKER_VARIABLES},
            "AWS_ENDPOINT_URL": stack.endpoint_url or "",
            "AGENT_SERVER_URL": server.url,
            "AGENT_SERVER_API_KEY": AGENT_SERVER_KEY,
            "AGENT_SERVER_SYNC_SECONDS": "0.2",
            "AGENT_SERVER_LOST_SECONDS": "2",
            "WORKER_ID": worker_id,
            "WAIT_TIME_SECONDS": "1",
            "BACKSTOP_SECONDS": "5",
            "QUEUE_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "ORPHAN_QUEUE_SECONDS": str(ORPHAN_SECONDS),
            "SHUTDOWN_GRACE_SECONDS": "3",
            **extra,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "openhands_stop.integrations.agent_server"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        assert self.process.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stderr,), daemon=True)
        self._reader.start()
        self.wait_for("worker_started")

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "unstructured", "line": line.rstrip()}
            with self._lock:
                self.events.append(event)

    def seen(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [
                e
                for e in self.events
                if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
            ]

    def wait_for(self, name: str, timeout: float = 30, **fields: Any) -> dict[str, Any]:
        try:
            found: list[dict[str, Any]] = wait_until(lambda: self.seen(name, **fields), timeout)
        except AssertionError:
            raise AssertionError(
                f"no {name} {fields} from the sidecar; saw {self.events}"
            ) from None
        return found[0]

    def terminate(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def our_id(agent_id: str) -> str:
    """The conversation id the stop route names for an untagged agent-server conversation."""
    return uuid.UUID(agent_id).hex


def stop(api: str, conversation_id: str, key: str) -> dict[str, Any]:
    """POST /api/conversations/{id}/stop on the stop route; the body of its 200."""
    response = httpx.post(
        f"{api}/api/conversations/{conversation_id}/stop",
        headers={"X-Session-API-Key": key},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
