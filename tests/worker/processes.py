"""Real processes for end-to-end tests: the stop API over HTTP, and a worker subprocess."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

from local.emulation import Stack, serve_route

DEADLINE_SECONDS = 15.0


@contextmanager
def stop_api(stack: Stack) -> Iterator[str]:
    """The stop route served by uvicorn on a free 127.0.0.1 port; yields its base URL."""
    with serve_route(stack.function_environment()) as url:
        yield url


class WorkerProcess:
    """``python -m openhands_stop.worker`` with its JSON log lines and stdout collected."""

    def __init__(self, stack: Stack, env: Mapping[str, str], args: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "openhands_stop.worker", *args],
            env={**os.environ, **stack.function_environment(), **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.stdout: list[str] = []
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_logs, args=(self.process.stderr,), daemon=True),
            threading.Thread(target=self._read_stdout, args=(self.process.stdout,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_logs(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "unstructured", "line": line.rstrip()}
            self.events.put(event)

    def _read_stdout(self, stream: IO[str]) -> None:
        for line in stream:
            self.stdout.append(line.rstrip())

    def next_event(self, name: str) -> dict[str, Any]:
        """The next log line whose ``event`` is ``name`` (the others are kept in ``seen``)."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(event)
            if event.get("event") == name:
                return event
        raise AssertionError(f"no {name!r} from the worker; saw {self.seen}")

    def terminate(self) -> int:
        """SIGTERM, as an orchestrator sends it; the exit code of a clean shutdown."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        for reader in self._readers:
            reader.join(DEADLINE_SECONDS)
        while not self.events.empty():
            self.seen.append(self.events.get())
        return code


@contextmanager
def worker_process(
    stack: Stack, env: Mapping[str, str], args: list[str]
) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(stack, env, args)
    try:
        yield worker
    finally:
        worker.terminate()


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
