"""A confirmed stop end to end (issue 19): the stop route with ``STOP_WAIT_SECONDS=0`` and
with the wait on, against one real worker process.

Four processes besides this one: moto's server (``python -m local.fleet moto``, with the
emulation's fixes, as ``make fleet`` runs it); the stop route twice on uvicorn (this module's
``route`` command: the package's app and service, as ``make run`` and ``make fleet`` serve
them), one with the wait off and one with it on; and one agent host (``python -m
local.fleet_host``: one ``Worker`` embedded through its public API, as a fleet worker with
``WORKER_QUEUE_PREFIX`` set, its queue of its own). The worker's settings are its defaults.

Each round starts two conversations on the worker (register, claim, a loop that runs until
it is cancelled) and stops one through each route, in turns (off first in even rounds, on
first in odd ones), one stop at a time: after each, the loop's end is awaited before the
next stop, so no stop shares the machine with another's tail. The first rounds warm both
routes up (the key's first read, the clients' connections) and are not counted.

Measured for each stop: the answer's latency at the client (one keep-alive connection per
route, as API Gateway's integration keeps them), its ``X-Stop-Confirmation`` and
``X-Stop-Confirmed-Ms`` headers, and from the route's stop log line its
``confirmation_reads``. Each route also counts its own DynamoDB ``GetItem`` calls with a
botocore hook (``local.fleet_costs.RequestCounter``), a check on the log lines' figure.
``benchmarks.report`` holds the targets and renders the table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

from local import fleet_host
from local.emulation import (
    DEMO_SESSION_KEY,
    ROOT,
    Stack,
    create_stack,
    free_port,
    load_template,
    stop_process,
    wait_for_port,
)

SMOKE_STOPS = 5
FULL_STOPS = 100
WARMUP_ROUNDS = 2
WAIT_SECONDS = 5.0  # the template's default StopWaitSeconds
DEADLINE_SECONDS = 20.0
SETTLE_SECONDS = 0.05  # after a loop's end, before the next stop
FUNCTION = "StopConversationFunction"


class _Lines:
    """JSON lines from a process's stream, read by a thread, kept in order."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.other: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                document = json.loads(line)
            except ValueError:
                document = None
            if isinstance(document, dict):
                self.lines.put(document)
            else:
                self.other.append(line.rstrip())

    def join(self) -> None:
        self._thread.join(DEADLINE_SECONDS)

    def drain(self) -> list[dict[str, Any]]:
        out = []
        while not self.lines.empty():
            out.append(self.lines.get())
        return out


class _Host:
    """``python -m local.fleet_host``: ``start`` commands on stdin, JSON replies on stdout."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = fleet_host.spawn(env)
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.out = _Lines(self.process.stdout)
        self.logs = _Lines(self.process.stderr)
        self.ended: set[str] = set()
        self._next("host_ready")

    def _next(self, event: str | None = None, reply: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.out.lines.get(timeout=left)
            except queue.Empty:
                break
            if line.get("event") == "loop_ended":
                self.ended.add(str(line["conversation_id"]))
            if (event and line.get("event") == event) or (reply and line.get("reply") == reply):
                return line
        tail = [*self.out.other[-5:], *(str(x) for x in self.logs.drain()[-5:])]
        raise RuntimeError(f"the worker host sent no {event or reply!r}; last lines: {tail}")

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def start(self, conversation_id: str) -> None:
        """Register the conversation and start a loop for it (the row is then RUNNING)."""
        token = uuid.uuid4().hex[:8]
        self.send(f"start {conversation_id} {token}")
        answer = self._next(reply=token)
        if not answer.get("ok"):
            raise RuntimeError(f"the worker did not start {conversation_id}: {answer}")

    def wait_ended(self, conversation_id: str) -> None:
        """Until the host reports that the conversation's loop returned."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while conversation_id not in self.ended:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the loop of {conversation_id} did not end")
            try:
                line = self.out.lines.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                continue
            if line.get("event") == "loop_ended":
                self.ended.add(str(line["conversation_id"]))

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("quit")
                assert self.process.stdin is not None
                self.process.stdin.close()
                self.process.wait(DEADLINE_SECONDS)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                pass
        stop_process(self.process)


class _Route:
    """This module's ``route`` command in a process of its own: the route on uvicorn."""

    def __init__(self, env: dict[str, str], wait_seconds: float) -> None:
        self.port = free_port()
        handle, name = tempfile.mkstemp(suffix=".json")
        os.close(handle)
        self.counts = counts = Path(name)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.confirmed", "route", str(self.port), str(counts)],
            cwd=ROOT,
            env={**env, "STOP_WAIT_SECONDS": f"{wait_seconds:g}", "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.out = _Lines(self.process.stdout)
        self.errors = _Lines(self.process.stderr)
        wait_for_port(self.port, self.process, seconds=60)  # type: ignore[arg-type]
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def stop(self, conversation_id: str) -> tuple[float, int, dict[str, str], str]:
        """One stop: (milliseconds to the whole answer, status, headers, body)."""
        began = time.perf_counter()
        self.connection.request(
            "POST",
            f"/api/conversations/{conversation_id}/stop",
            headers={"X-Session-API-Key": DEMO_SESSION_KEY, "Content-Length": "0"},
        )
        response = self.connection.getresponse()
        body = response.read().decode()
        elapsed = 1000 * (time.perf_counter() - began)
        headers = {name.lower(): value for name, value in response.getheaders()}
        return elapsed, response.status, headers, body

    def close(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Stop the route; its stop log lines and its AWS calls by kind."""
        self.connection.close()
        stop_process(self.process)
        self.out.join()
        self.errors.join()
        try:
            counts: dict[str, Any] = json.loads(self.counts.read_text("utf-8"))
        except (OSError, ValueError):
            counts = {}
        finally:
            self.counts.unlink(missing_ok=True)
        return [x for x in self.out.drain() if x.get("message") == "stop"], counts


def memory_mb() -> int:
    """The function's MemorySize in template.yaml: what its Lambda time is billed at."""
    function = load_template()["Resources"][FUNCTION]["Properties"]
    return int(function["MemorySize"])


def commit() -> str:
    """The commit measured (``-dirty`` if tracked files differ from it)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    head = git("rev-parse", "--short=10", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head + ("-dirty" if dirty else "")


@contextmanager
def _moto() -> Iterator[str]:
    from local.fleet import _moto_process

    with _moto_process() as endpoint:
        yield endpoint


def measure(stops: int, wait_seconds: float = WAIT_SECONDS) -> dict[str, Any]:
    """``stops`` stops with the wait off and as many with it on; the raw samples."""
    began = time.monotonic()
    tag = uuid.uuid4().hex[:6]
    samples: list[dict[str, Any]] = []
    with ExitStack() as stack_of_processes, _moto() as endpoint:
        stack: Stack = create_stack(endpoint, suffix=f"-confirmed-{tag}")
        env = {**os.environ, **stack.function_environment()}
        env.pop("STOP_WAIT_SECONDS", None)
        host = _Host(env)
        stack_of_processes.callback(host.close)
        routes = {"off": _Route(env, 0), "on": _Route(env, wait_seconds)}
        for route in routes.values():
            stack_of_processes.callback(route.close)
        for number in range(WARMUP_ROUNDS + stops):
            ids = {wait: f"bench-{wait}-{number}-{tag}" for wait in routes}
            for conversation_id in ids.values():
                host.start(conversation_id)
            for wait in ("off", "on") if number % 2 == 0 else ("on", "off"):
                ms, status, headers, body = routes[wait].stop(ids[wait])
                if status != 200 or "stopped successfully" not in body:
                    raise RuntimeError(f"a stop ({wait}) answered {status}: {body}")
                host.wait_ended(ids[wait])
                time.sleep(SETTLE_SECONDS)
                if number < WARMUP_ROUNDS:
                    continue
                confirmed_ms = headers.get("x-stop-confirmed-ms")
                samples.append(
                    {
                        "wait": wait,
                        "conversation_id": ids[wait],
                        "ms": round(ms, 3),
                        "confirmation": headers.get("x-stop-confirmation"),
                        "confirmed_ms": None if confirmed_ms is None else int(confirmed_ms),
                    }
                )
        logs: dict[str, list[dict[str, Any]]] = {}
        counts: dict[str, dict[str, Any]] = {}
        for wait, route in routes.items():
            logs[wait], counts[wait] = route.close()
    counted = {str(s["conversation_id"]) for s in samples}
    reads: dict[str, int] = {}
    for wait in routes:
        for line in logs[wait]:
            if line.get("conversation_id") in counted:
                reads[str(line["conversation_id"])] = int(line.get("confirmation_reads") or 0)
    for sample in samples:
        if sample["conversation_id"] not in reads:
            raise RuntimeError(f"no stop log line for {sample['conversation_id']}")
        sample["reads"] = reads.pop(sample["conversation_id"])
    return {
        "stops": stops,
        "warmup_rounds": WARMUP_ROUNDS,
        "wait_seconds": wait_seconds,
        "memory_mb": memory_mb(),
        "python": sys.version.split()[0],
        "commit": commit(),
        "samples": samples,
        # Over every stop of the run, warm-up rounds included: the GetItem calls botocore
        # counted in each route, and the sum of its stop log lines' confirmation_reads.
        "route_get_item_calls": {
            wait: int(counts[wait].get("requests", {}).get("dynamodb.GetItem", 0))
            for wait in routes
        },
        "route_logged_reads": {
            wait: sum(int(line.get("confirmation_reads") or 0) for line in logs[wait])
            for wait in routes
        },
        "seconds": round(time.monotonic() - began, 1),
    }


def serve_route(port: int, counts: Path) -> None:
    """The route on uvicorn on 127.0.0.1:``port``, settings from the environment; at exit
    (SIGTERM) its AWS calls by kind are written to ``counts``."""
    import uvicorn
    from openhands_stop.aws.clients import _session
    from openhands_stop.edge.app import create_app
    from openhands_stop.edge.settings import RouteSettings
    from openhands_stop.wiring import build_service

    from local.fleet_costs import RequestCounter

    counter = RequestCounter()
    counter.install(_session())  # before the service makes its clients
    app = create_app(build_service(RouteSettings.from_environment()))
    # uvicorn shuts down on SIGTERM, then raises it again for the handler it found: let
    # that one return, so the counts below are written.
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)
    counts.write_text(json.dumps(counter.snapshot()), "utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    route = commands.add_parser("route", help="serve the route (used by the measurement)")
    route.add_argument("port", type=int)
    route.add_argument("counts", type=Path)
    run = commands.add_parser("run", help="measure and print the raw result as JSON")
    run.add_argument("--stops", type=int, default=SMOKE_STOPS)
    args = parser.parse_args()
    if args.command == "route":
        serve_route(args.port, args.counts)
    else:
        print(json.dumps(measure(args.stops), indent=2))


if __name__ == "__main__":
    main()
