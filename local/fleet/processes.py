"""The fleet's processes: moto's server in a process of its own, the stop route on uvicorn in
a thread of the harness's (its log records counted, not printed), and the agent hosts
(``local.fleet.host``), each driven over its stdin and read from its two streams."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from local.emulation import (
    AWS_DUMMY_ENV,
    ROOT,
    free_port,
    moto_server,
    serve_route,
    stop_process,
    wait_for_port,
)
from local.fleet import host

ROUTE_LOGGER = "stop-conversation"  # the service name the route's logger is given


def moto_main(port: int) -> None:
    """``python -m local.fleet moto --port N``: moto's server until the process is ended."""
    with moto_server(port):
        threading.Event().wait()


@contextmanager
def moto_process() -> Iterator[str]:
    """moto's server in a process of its own, on a free port; yields its URL."""
    port = free_port()
    env = {**os.environ, **AWS_DUMMY_ENV}
    env.pop("AWS_ENDPOINT_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "local.fleet", "moto", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process, seconds=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set variables in this process (the route's AWS clients read the endpoint there)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class LogTally(logging.Handler):
    """Counts the route's log records at WARNING and above by their first word (the event),
    errors apart; none is printed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.errors: Counter[str] = Counter()
        self.warnings: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        words = record.getMessage().split()
        event = words[0] if words else record.levelname
        (self.errors if record.levelno >= logging.ERROR else self.warnings)[event] += 1


class RouteOutput(io.TextIOBase):
    """Stands in for stdout while the route runs: its one JSON line per request is read,
    counted by level and dropped (it would bury the progress lines)."""

    def __init__(self) -> None:
        self.levels: Counter[str] = Counter()
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
            for line in lines:
                try:
                    level = str(json.loads(line).get("level"))
                except (ValueError, AttributeError):
                    level = "unstructured"
                self.levels[level] += 1
        return len(text)

    @property
    def error_lines(self) -> int:
        return sum(n for level, n in self.levels.items() if level in {"ERROR", "CRITICAL"})

    @property
    def warning_lines(self) -> int:
        return sum(n for level, n in self.levels.items() if level == "WARNING")


@contextmanager
def counted_route(env: dict[str, str], tally: LogTally) -> Iterator[str]:
    """The stop route (``serve_route``), its loggers' records at WARNING and above counted
    by ``tally``; yields its URL."""
    # The route's loggers here: Powertools' (the service name) and the package's own (no
    # worker runs in this process). Counted, not printed: they would bury the progress.
    loggers = [logging.getLogger(ROUTE_LOGGER), logging.getLogger("openhands_stop")]
    saved_levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
        logger.addHandler(tally)
    try:
        with serve_route(env) as url:
            yield url
    finally:
        for logger, level in zip(loggers, saved_levels, strict=True):
            logger.removeHandler(tally)
            logger.setLevel(level)


class HostDied(Exception):
    """The host process ended (killed) before it answered."""


LineSink = Callable[[int, str, dict[str, Any]], None]


class Host:
    """One ``local.fleet.host`` process: commands on stdin, JSON lines from both streams."""

    def __init__(self, index: int, env: dict[str, str], sink: LineSink) -> None:
        self.index = index
        self.process = host.spawn(env)
        self.queue_url: str | None = None
        self.killed = False
        self.closed = threading.Event()  # both streams ended: every line has been read
        self._sink = sink
        self._open_streams = 2
        self._lock = threading.Lock()
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, "host"), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, "worker"), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str], source: str) -> None:
        for line in stream:
            try:
                document = json.loads(line)
            except ValueError:
                document = {"event": "unstructured", "line": line.rstrip()}
            if not isinstance(document, dict):
                document = {"event": "unstructured", "line": line.rstrip()}
            document["_received"] = time.time()
            self._sink(self.index, source, document)
        with self._lock:
            self._open_streams -= 1
            if self._open_streams == 0:
                self.closed.set()
                self._sink(self.index, "eof", {"event": "host_eof"})

    @property
    def alive(self) -> bool:
        return not self.killed and self.process.poll() is None

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError) as error:
            raise HostDied(f"host {self.index}: {error}") from error

    def kill(self) -> None:
        self.killed = True
        self.process.send_signal(signal.SIGKILL)

    def close(self, timeout: float) -> int | None:
        """A clean shutdown: ``quit``, end of input, then wait; the exit code or None."""
        if self.process.poll() is None and not self.killed:
            with contextlib.suppress(HostDied):
                self.send("quit")
            with contextlib.suppress(BrokenPipeError, ValueError, OSError):
                assert self.process.stdin is not None
                self.process.stdin.close()
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code = None
        self.closed.wait(10)
        return code
