"""``make fleet``: a fleet of agent workers, real processes on 127.0.0.1, stopped over HTTP.

moto's server in a process of its own; the stop route on uvicorn (a thread here); N agent
hosts (``local.fleet_host``, each embedding one ``Worker``), every one with the same
environment, each creating its own cancel queue under ``WORKER_QUEUE_PREFIX``. Every
conversation is started and stopped ``cycles`` times, a restart landing on another worker
some of the time; partway through, one worker is killed with SIGKILL and another hangs
past the orphan age, while two run with their wall clocks 15 minutes ahead and behind for
the whole run (``local.fleet_faults``). Then runs are held idle a few seconds on every live
worker (the backstop's steady cost), every live worker shuts down cleanly, and the queues
left under the prefix are counted. Every process counts its AWS requests by kind
(``local.fleet_costs``): the cost section of docs/performance.md.

    python -m local.fleet                         # 8 workers, 400 conversations, 3 cycles
    python -m local.fleet --output docs/reliability.md --costs docs/performance.md

What is counted comes from the processes' own output and the table: each host writes a
line when a loop starts and ends (with its run id), each worker logs ``conversation_stopped``
(run id, via, stop-to-stopped), and after every stop the row must show
``loop_stopped_via`` and ``loop_stopped_at`` for that run before the conversation restarts.
A "wrong kill" is a loop that ended while no stop had been sent for its run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx

from local import fleet_confirm, fleet_costs, fleet_host
from local.emulation import (
    AWS_DUMMY_ENV,
    ROOT,
    Stack,
    create_stack,
    free_port,
    stop_process,
    wait_for_port,
)
from local.fleet_faults import CLOCK_OFFSET_VARIABLE, Faults, fault_checks, fault_rows

SECTION_BEGIN = "<!-- fleet:begin -->"
SECTION_END = "<!-- fleet:end -->"

ROUTE_LOGGER = "stop-conversation"  # the service name the route's logger is given

QUEUE_SHARE_TARGET = 0.99
P99_TARGET_MS = 500.0
START_ATTEMPTS = 3
SHUTDOWN_STOPS_HEAD_START = (0.0, 0.1)
"""Seconds the stops sent at shutdown get before the workers are told to quit."""
QUEUE_SHARE_MISSED = f"under {QUEUE_SHARE_TARGET:.0%} stopped via the queue"
P99_MISSED = f"p99 stop-to-stopped not under {P99_TARGET_MS:.0f} ms"
RELEASE_MISSED = "the killed worker's runs were not released within the bound"
TIMING_FAILURES = frozenset(
    {
        QUEUE_SHARE_MISSED,
        P99_MISSED,
        RELEASE_MISSED,
        fleet_confirm.CONFIRMED_MISSED,
        fleet_confirm.DEAD_SLOW,
    }
)
"""The targets that depend on how fast this machine is (the queue's share too: the backstop
takes the stops whose cancel is slower than its grace)."""


@dataclass(frozen=True)
class FleetConfig:
    """The size of a run and the workers' timings (every worker gets the same)."""

    workers: int = 8
    conversations: int = 400
    cycles: int = 3
    kill: bool = True
    kill_after: float = 0.4  # the share of stops done when the victim is killed
    move_share: float = 0.5  # restarts that go to another worker
    repeat_share: float = 0.25  # stops sent again once carried out, right before the restart
    in_flight: int = 48  # conversations between a start and a verified stop at once
    dwell_seconds: tuple[float, float] = (0.2, 1.5)  # how long a loop runs before its stop
    backstop_seconds: float = 2.0
    heartbeat_seconds: float = 2.0
    orphan_seconds: float = 10.0
    wait_time_seconds: int = 2
    stop_wait_seconds: float = 5.0  # the route's STOP_WAIT_SECONDS: a confirmed stop
    shutdown_stops: int = 8  # runs per live worker held idle, then stopped at shutdown
    idle_seconds: float = 10.0  # how long those runs are held before their stops
    skew_seconds: float = 900.0  # host 0's wall clock this far ahead, host 1's behind
    hang: bool = True
    hang_after: float = 0.6  # the share of stops done when a worker's event loop blocks
    max_seconds: float = 600.0
    seed: int = 10

    @property
    def stops(self) -> int:
        return self.conversations * self.cycles

    @property
    def release_bound(self) -> float:
        """A dead worker's runs are released within this (issue 17's target)."""
        return self.orphan_seconds + 2 * self.heartbeat_seconds + 5

    @property
    def hang_seconds(self) -> float:
        """Long enough for any judge to have declared the hung worker dead."""
        return self.orphan_seconds + 2 * self.heartbeat_seconds + 6

    def worker_environment(self, stack: Stack, prefix: str) -> dict[str, str]:
        """The one environment every worker of the fleet gets."""
        assert stack.endpoint_url is not None
        return {
            **AWS_DUMMY_ENV,
            "AWS_ENDPOINT_URL": stack.endpoint_url,
            "CONVERSATIONS_TABLE_NAME": stack.table_name,
            "CANCEL_QUEUE_URL": stack.queue_url,
            "WORKER_QUEUE_PREFIX": prefix,
            "QUEUE_HEARTBEAT_SECONDS": str(self.heartbeat_seconds),
            "ORPHAN_QUEUE_SECONDS": str(self.orphan_seconds),
            "BACKSTOP_SECONDS": str(self.backstop_seconds),
            "WAIT_TIME_SECONDS": str(self.wait_time_seconds),
            "CLEANUP_TIMEOUT_SECONDS": "2",
            "SHUTDOWN_GRACE_SECONDS": "3",
        }


FULL = FleetConfig()
SMALL = FleetConfig(
    workers=4,
    conversations=24,
    cycles=2,
    in_flight=12,
    stop_wait_seconds=2.0,
    heartbeat_seconds=1.0,
    orphan_seconds=4.0,
    shutdown_stops=6,
    idle_seconds=3.0,
    max_seconds=240.0,
)
"""What pytest runs (tests/fleet): the same harness, small."""


class HostDied(Exception):
    """The host process ended (killed) before it answered."""


@dataclass
class Run:
    """One claim of one conversation: what the harness did to it and what it saw."""

    conversation_id: str
    run_id: str
    host: int
    cycle: int
    stop_sent_at: float | None = None  # wall clock, just before the stop was sent
    stopped: dict[str, Any] | None = None  # the worker's conversation_stopped
    ended: dict[str, Any] | None = None  # the host's loop_ended
    table_via: str | None = None
    table_at: str | None = None
    died_with_worker: bool = False
    at_shutdown: bool = False  # stopped as the workers shut down: counted apart
    table_problem: str | None = None  # what the row check found wrong
    confirmation: str | None = None  # its stop's X-Stop-Confirmation
    confirmed_ms: float | None = None  # and X-Stop-Confirmed-Ms

    @property
    def targeted(self) -> bool:
        return self.stop_sent_at is not None


@dataclass
class FleetResult:
    """The figures of one run; ``failures`` names every target missed."""

    config: FleetConfig
    seconds: float = 0.0
    completed: bool = False
    stops_sent: int = 0
    stops_answered: int = 0  # answered 200 (after retries on 503)
    stop_retries: int = 0
    stops_repeated: int = 0  # stops sent again after the loop was stopped (a client's retry)
    statuses: dict[str, int] = field(default_factory=dict)
    runs: int = 0
    runs_targeted: int = 0
    via_queue: int = 0
    via_backstop: int = 0
    backstop_raced: int = 0  # backstop stops whose cancel then arrived, as a duplicate
    via_other: dict[str, int] = field(default_factory=dict)
    never: int = 0
    died_with_worker: int = 0
    died_stop_in_flight: int = 0  # of those, runs whose stop had been sent before the kill
    starts_lost_with_worker: int = 0
    stops_after_release: int = 0  # stops of the killed worker's runs, once released
    stops_after_release_answered: int = 0
    victim_instance: str | None = None
    released_runs: int = 0  # the killed worker's runs whose rows show worker_lost
    victim_rows_via: dict[str, int] = field(default_factory=dict)
    released_after_s: float | None = None  # from the kill: no row names it, queue gone
    extra_cycles: int = 0  # cycles run to start a released conversation again
    restart_needed: int = 0  # conversations of the killed worker started again on a peer
    restarted_on_peer: int = 0
    live_runs_released: int = 0
    live_workers_declared: list[str] = field(default_factory=list)
    live_queues_deleted: int = 0
    skewed_hosts: dict[str, float] = field(default_factory=dict)
    hung: bool = False
    hung_instance: str | None = None
    hang_seconds: float = 0.0
    hung_declared: bool = False
    hung_rejoined_by: str | None = None
    hung_queue_missing_seen: int = 0
    hung_runs_halted_at_rejoin: int = 0
    hung_runs: int = 0  # held by the hung worker across its hang: counted apart
    hung_runs_via: dict[str, int] = field(default_factory=dict)
    hung_runs_never: int = 0
    hung_rows_wrong: int = 0
    after_hang_runs: int = 0  # claimed by the hung worker's new instance, stopped
    after_hang_via: dict[str, int] = field(default_factory=dict)
    costs: fleet_costs.Costs = field(default_factory=fleet_costs.Costs)
    confirmations: fleet_confirm.Confirmations = field(default_factory=fleet_confirm.Confirmations)
    wrong_kills: int = 0
    wrong_kill_examples: list[str] = field(default_factory=list)
    table_checked: int = 0
    table_disagreements: int = 0
    killed_rows_unwritten: int = 0
    table_examples: list[str] = field(default_factory=list)
    starts_failed: int = 0
    start_retries: int = 0
    start_errors: dict[str, int] = field(default_factory=dict)
    moved_restarts: int = 0
    cancels_handled: dict[str, int] = field(default_factory=dict)
    latencies_missing: int = 0  # stopped runs whose line had no stop_to_stopped_ms
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    killed: bool = False
    killed_runs_live: int = 0
    killed_queue_removed: bool | None = None
    killed_queue_removed_after_s: float | None = None
    queues_left: list[str] = field(default_factory=list)
    clean_exits: int = 0
    clean_shutdowns: int = 0
    rows_not_stopped: int = 0
    shutdown_stops: int = 0
    shutdown_rows_unmarked: int = 0
    shutdown_rows_via: dict[str, int] = field(default_factory=dict)
    stack_queue_left: int = 0
    worker_errors: int = 0
    route_errors: int = 0
    route_warnings: dict[str, int] = field(default_factory=dict)  # by event
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def stopped(self) -> int:
        return self.via_queue + self.via_backstop + sum(self.via_other.values())

    @property
    def should_stop(self) -> int:
        """Runs a stop targeted, less those that died with the killed worker."""
        return self.runs_targeted - self.died_with_worker


# -- processes ---------------------------------------------------------------------------


def _moto_main(port: int) -> None:
    from local.emulation import moto_server

    with moto_server(port):
        threading.Event().wait()


@contextmanager
def _moto_process() -> Iterator[str]:
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
def _environment(values: dict[str, str]) -> Iterator[None]:
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


class _Tally(logging.Handler):
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


class _RouteOutput(io.TextIOBase):
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
def _stop_route(env: dict[str, str], tally: _Tally) -> Iterator[str]:
    """The stop route on uvicorn in a thread, on a free 127.0.0.1 port; yields its URL."""
    import uvicorn
    from openhands_stop.edge.app import create_app
    from openhands_stop.edge.settings import Settings
    from openhands_stop.wiring import build_service

    # The route's loggers here: Powertools' (the service name) and the package's own (no
    # worker runs in this process). Counted, not printed: they would bury the progress.
    loggers = [logging.getLogger(ROUTE_LOGGER), logging.getLogger("openhands_stop")]
    saved_levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
        logger.addHandler(tally)
    app = create_app(build_service(Settings.from_environment(env)))
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="stop-route", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the stop route did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        for logger, level in zip(loggers, saved_levels, strict=True):
            logger.removeHandler(tally)
            logger.setLevel(level)


LineSink = Callable[[int, str, dict[str, Any]], None]


class Host:
    """One ``local.fleet_host`` process: commands on stdin, JSON lines from both streams."""

    def __init__(self, index: int, env: dict[str, str], sink: LineSink) -> None:
        self.index = index
        self.process = fleet_host.spawn(env)
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


# -- the run -----------------------------------------------------------------------------


def _wall(document: dict[str, Any]) -> float:
    """When a line says it happened: the worker's ``time``, else when it was read."""
    stamp = document.get("time")
    if isinstance(stamp, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(stamp).timestamp()
    received: float = document["_received"]
    return received


STAMP_SLACK_SECONDS = 0.002
"""Log lines are stamped to the millisecond: an end stamped this much before the stop was
sent can still be that stop's doing."""


def wrong_kill(document: dict[str, Any], run: Run | None) -> str | None:
    """Why this line telling of a loop's end is a wrong kill, or None when a stop had been
    sent for its run before it ended."""
    if run is None:
        return "a run the harness never started"
    if run.stop_sent_at is None:
        return "no stop was ever sent for it"
    if _wall(document) < run.stop_sent_at - STAMP_SLACK_SECONDS:
        return "it ended before its stop was sent"
    return None


def _percentile(ordered: list[float], share: float) -> float:
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


class Fleet(Faults):
    """Drives one run; ``run()`` returns its ``FleetResult``."""

    def __init__(
        self,
        config: FleetConfig,
        stack: Stack,
        key: str,
        prefix: str,
        *,
        base_env: dict[str, str],
        out: IO[str],
    ) -> None:
        self.out = out
        self.config = config
        self.stack = stack
        self.route = ""  # set once the route listens
        self.key = key
        self.prefix = prefix
        self.base_env = base_env
        self.result = FleetResult(config=config)
        self.random = random.Random(config.seed)  # noqa: S311 - a fixed order, not a secret
        self.hosts: list[Host] = []
        self.runs: dict[str, Run] = {}
        self.events: list[tuple[int, str, dict[str, Any]]] = []
        self._waiters: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self._arrived: dict[tuple[str, str], dict[str, Any]] = {}
        self._waiting_host: dict[tuple[str, str], int] = {}
        self._steps_done = 0
        self._kill_now = asyncio.Event()
        self._victim: Host | None = None
        self._killed_at: float | None = None
        self._killed_wall = math.inf
        self._late_stops: asyncio.Task[None] | None = None
        self.started_wall: dict[str, float] = {}  # run id -> its loop_started
        self.host_reports: dict[int, dict[str, Any]] = {}  # host_closed lines
        self._loop = asyncio.get_running_loop()
        self._aws = self._clients()
        self._init_faults()

    def _clients(self) -> tuple[Any, Any]:
        import boto3
        from botocore.config import Config

        config = Config(max_pool_connections=64, retries={"mode": "standard"})
        factory: Any = boto3.client
        endpoint = self.stack.endpoint_url
        return (
            factory("dynamodb", region_name="us-east-1", endpoint_url=endpoint, config=config),
            factory("sqs", region_name="us-east-1", endpoint_url=endpoint, config=config),
        )

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    # -- lines from the hosts (reader threads hand them to the loop) --

    def _sink(self, index: int, source: str, document: dict[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: the run is over
            self._loop.call_soon_threadsafe(self._on_line, index, source, document)

    def _on_line(self, index: int, source: str, document: dict[str, Any]) -> None:
        self.events.append((index, source, document))
        event = document.get("event")
        if "reply" in document:
            self._arrive(("reply", str(document["reply"])), document)
        elif event == "host_ready":
            self.hosts[index].queue_url = document.get("cancel_queue_url")
            self.instances[index] = str(document.get("instance"))
            self._arrive(("ready", str(index)), document)
        elif event == "conversation_stopped" and document.get("run_id"):
            self._arrive(("stopped", str(document["run_id"])), document)
        elif event == "run_ended" and document.get("via") == "worker_lost":
            # A loop halted because peers had released its run (the worker hung).
            self._arrive(("stopped", str(document.get("run_id"))), document)
        elif event == "conversation_claimed" and document.get("run_id"):
            self.claimed_instance[str(document["run_id"])] = str(document.get("worker_instance"))
        elif event in {"worker_rejoined", "worker_queue_recreated"}:
            self.instances[index] = str(document.get("worker_instance"))
        elif event == "loop_started" and document.get("run_id"):
            self.started_wall[str(document["run_id"])] = _wall(document)
        elif event == "loop_ended" and document.get("run_id"):
            run = self.runs.get(str(document["run_id"]))
            if run is not None:
                run.ended = document
        elif event == "host_closed":
            self.host_reports[index] = document
        elif event == "host_eof":
            self._host_gone(index)

    def _arrive(self, key: tuple[str, str], document: dict[str, Any]) -> None:
        waiter = self._waiters.pop(key, None)
        self._waiting_host.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(document)
        else:
            self._arrived[key] = document

    def _host_gone(self, index: int) -> None:
        """Every line of this host has been read: what it has not said, it never will."""
        for key, host in list(self._waiting_host.items()):
            if host == index:
                self._waiting_host.pop(key, None)
                waiter = self._waiters.pop(key, None)
                if waiter is not None and not waiter.done():
                    waiter.set_exception(HostDied(f"host {index} ended"))

    async def _wait(self, key: tuple[str, str], host: int, timeout: float) -> dict[str, Any]:
        if key in self._arrived:
            return self._arrived.pop(key)
        if self.hosts[host].closed.is_set():
            raise HostDied(f"host {host} ended")
        waiter: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._waiters[key] = waiter
        self._waiting_host[key] = host
        try:
            return await asyncio.wait_for(waiter, timeout)
        finally:
            self._waiters.pop(key, None)
            self._waiting_host.pop(key, None)

    # -- one conversation --

    def _choose_host(self, previous: int | None) -> int:
        live = [host.index for host in self.hosts if host.alive]
        if self._hung is not None and self._steer_to_hung > 0 and self._hung.index in live:
            # A few starts for the hung worker: claimed once it resumes, by its new instance.
            self._steer_to_hung -= 1
            return self._hung.index
        if previous is None or previous not in live:
            return self.random.choice(live)
        if len(live) > 1 and self.random.random() < self.config.move_share:
            self.result.moved_restarts += 1
            return self.random.choice([index for index in live if index != previous])
        return previous

    async def _start(self, conversation_id: str, host: int, cycle: int) -> Run | None:
        """Register and start it on ``host``; a failure other than a refused claim (an AWS
        call that gave up, say) is retried as a host would, and counted."""
        for attempt in range(START_ATTEMPTS):
            token = secrets.token_hex(6)
            self.hosts[host].send(f"start {conversation_id} {token}")
            try:
                reply = await self._wait(("reply", token), host, timeout=60)
            except TimeoutError:
                reply = {"ok": False, "error": "no reply from the host"}
            if reply.get("ok"):
                run = Run(conversation_id, str(reply["run_id"]), host, cycle)
                self.runs[run.run_id] = run
                return run
            error = str(reply.get("error"))
            if error == "claim_rejected":
                error = f"claim_rejected (status {reply.get('status')})"
            self.result.start_errors[error] = self.result.start_errors.get(error, 0) + 1
            if error.startswith("claim_rejected") or attempt == START_ATTEMPTS - 1:
                break
            self.result.start_retries += 1
            await asyncio.sleep(1)
        self.result.starts_failed += 1
        return None

    async def _stop(
        self, http: httpx.AsyncClient, conversation_id: str, run: Run | None = None
    ) -> bool:
        """Send the stop, retrying what is not a 200 as a client would; was it answered?
        What the answer says of the loop (X-Stop-Confirmation) is kept on ``run``."""
        self.result.stops_sent += 1
        for _attempt in range(10):
            try:
                response = await http.post(f"/api/conversations/{conversation_id}/stop")
                status = str(response.status_code)
            except httpx.HTTPError as error:
                status = type(error).__name__
            self.result.statuses[status] = self.result.statuses.get(status, 0) + 1
            if status == "200":
                self.result.stops_answered += 1
                outcome = response.headers.get(fleet_confirm.CONFIRMATION_HEADER, "none")
                self.result.confirmations.answered(outcome)
                if run is not None:
                    run.confirmation = outcome
                    confirmed_ms = response.headers.get(fleet_confirm.CONFIRMED_MS_HEADER)
                    run.confirmed_ms = float(confirmed_ms) if confirmed_ms else None
                return True
            self.result.stop_retries += 1
            await asyncio.sleep(1)
        return False

    async def _verify_row(self, run: Run) -> None:
        """The row must show this run's loop as stopped, and how, before anything restarts."""
        dynamodb = self._aws[0]
        deadline = time.monotonic() + 15
        delay = 0.02
        item: dict[str, Any] = {}
        while time.monotonic() < deadline:
            item = (
                await asyncio.to_thread(
                    dynamodb.get_item,
                    TableName=self.stack.table_name,
                    Key={"conversation_id": {"S": run.conversation_id}},
                    ConsistentRead=True,
                )
            ).get("Item", {})
            if item.get("run_id", {}).get("S") == run.run_id and "loop_stopped_via" in item:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        run.table_via = item.get("loop_stopped_via", {}).get("S")
        run.table_at = item.get("loop_stopped_at", {}).get("S")
        logged_via = (run.stopped or {}).get("via")
        problem = None
        if item.get("run_id", {}).get("S") != run.run_id:
            problem = f"row run_id {item.get('run_id')} is not the stopped run"
        elif item.get("status", {}).get("S") != "STOPPED":
            problem = f"row status {item.get('status')}"
        elif run.table_via is None or run.table_at is None:
            problem = "no loop_stopped_via/loop_stopped_at"
        elif run.table_via != logged_via:
            problem = f"row says via {run.table_via}, the worker logged {logged_via}"
        run.table_problem = problem  # counted by _tally, which knows the hung worker's runs

    async def _conversation(
        self, http: httpx.AsyncClient, conversation_id: str, slots: asyncio.Semaphore
    ) -> None:
        host: int | None = None
        restart = False  # its run died with the killed worker: start it again on a peer
        cycle = 0
        while cycle < self.config.cycles or restart:
            cycle += 1
            self.result.extra_cycles += cycle > self.config.cycles
            async with slots:
                host = self._choose_host(host)
                try:
                    run = await self._start(conversation_id, host, cycle - 1)
                except HostDied:
                    # Killed while starting it: the row may be STARTING, or RUNNING for a run
                    # nobody runs; once released, the stop settles it, and it starts again.
                    self.result.starts_lost_with_worker += 1
                    await self._after_release()
                    await self._stop(http, conversation_id)
                    self._step_done()
                    restart = True
                    continue
                if restart:
                    self.result.restart_needed += 1
                    self.result.restarted_on_peer += run is not None
                    restart = False
                if run is None:
                    await self._stop(http, conversation_id)
                    self._step_done()
                    continue
                await asyncio.sleep(self.random.uniform(*self.config.dwell_seconds))
                if self.hosts[host].killed:
                    await self._after_release()
                run.stop_sent_at = time.time()
                answered = await self._stop(http, conversation_id, run)
                if self.hosts[host].killed and self.result.released_after_s is not None:
                    # Released: the stop answers "not running", and sends nothing.
                    self.result.stops_after_release += 1
                    self.result.stops_after_release_answered += answered
                try:
                    run.stopped = await self._wait(
                        ("stopped", run.run_id), host, timeout=self.stop_timeout(run)
                    )
                except HostDied:
                    run.died_with_worker = True
                    await self._after_release()
                    restart = True
                except TimeoutError:
                    pass  # counted as never stopped
                if run.stopped is not None:
                    await self._verify_row(run)
                    if self.random.random() < self.config.repeat_share:
                        # A client's retry of the stop, once the loop is stopped: the route
                        # sends the recorded cancel (this run's) again, and the next cycle
                        # may claim a new run before it lands: it must stop nothing new.
                        self.result.stops_repeated += 1
                        await self._stop(http, conversation_id)
                self._step_done()

    def _step_done(self) -> None:
        self._steps_done += 1
        if self._steps_done >= self.config.kill_after * self.config.stops:
            self._kill_now.set()
        if self._steps_done >= self.config.hang_after * self.config.stops:
            self._hang_now.set()

    # -- progress --

    async def _progress(self, started: float) -> None:
        while True:
            await asyncio.sleep(5)
            stopped = Counter(
                str(run.stopped.get("via")) for run in self.runs.values() if run.stopped
            )
            died = sum(run.died_with_worker for run in self.runs.values())
            live = sum(host.alive for host in self.hosts)
            self._say(
                f"fleet: {time.monotonic() - started:5.0f} s  {self._steps_done}/"
                f"{self.config.stops} stops done  stopped {dict(stopped)}  died {died}  "
                f"workers alive {live}/{len(self.hosts)}",
            )

    # -- the whole run --

    async def run(self) -> FleetResult:
        started = time.monotonic()
        env = {**self.base_env, **self.config.worker_environment(self.stack, self.prefix)}
        self.hosts = [
            Host(n, {**env, CLOCK_OFFSET_VARIABLE: f"{self.offset(n):g}"}, self._sink)
            for n in range(self.config.workers)
        ]
        progress = asyncio.create_task(self._progress(started))
        try:
            await asyncio.wait_for(self._drive(started), self.config.max_seconds)
            self.result.completed = True
        except TimeoutError:
            self.result.failures.append(f"not done within {self.config.max_seconds:.0f} s")
        finally:
            progress.cancel()
            await self._shutdown()
            self.result.seconds = round(time.monotonic() - started, 1)
        self._tally()
        self._judge()
        return self.result

    async def _drive(self, started: float) -> None:
        for host in self.hosts:
            await self._wait(("ready", str(host.index)), host.index, timeout=60)
        self._say(
            f"fleet: {len(self.hosts)} workers ready in {time.monotonic() - started:.1f} s, "
            f"queues under {self.prefix}",
        )
        slots = asyncio.Semaphore(self.config.in_flight)
        killer = asyncio.create_task(self._killer()) if self.config.kill else None
        hanger = asyncio.create_task(self._hanger()) if self.config.hang else None
        ids = [f"fleet-{n:04d}" for n in range(self.config.conversations)]
        limits = httpx.Limits(max_connections=self.config.in_flight)
        async with httpx.AsyncClient(
            base_url=self.route,
            headers={"X-Session-API-Key": self.key},
            timeout=30,
            limits=limits,
        ) as http:
            outcomes = await asyncio.gather(
                *(self._conversation(http, cid, slots) for cid in ids), return_exceptions=True
            )
        errors = Counter(
            f"{type(error).__name__}: {error}"
            for error in outcomes
            if isinstance(error, BaseException)
        )
        self.result.failures += [f"harness error x{n}: {text}" for text, n in errors.items()]
        if hanger is not None:
            self._hang_now.set()
            await hanger
        if killer is not None:
            self._kill_now.set()
            await killer
            await self._await_release()
        await self._stops_at_shutdown()

    async def _stops_at_shutdown(self) -> None:
        """A few runs on each live worker, stopped just as the workers are told to shut down
        (``_shutdown`` follows at once): whichever ends each loop first, the cancel or the
        shutdown, its row must say how it ended."""
        live = [host.index for host in self.hosts if host.alive]
        starts = [
            self._start(f"fleet-shutdown-{host}-{n}", host, cycle=-1)
            for host in live
            for n in range(self.config.shutdown_stops)
        ]
        runs = [run for run in await asyncio.gather(*starts) if run is not None]
        for run in runs:
            run.at_shutdown = True
        self.result.shutdown_stops = len(runs)
        # Held idle first: what the backstop (and liveness) cost while runs only run.
        before = await asyncio.gather(*(self._stats(host) for host in live))
        idle_started = time.monotonic()
        await asyncio.sleep(self.config.idle_seconds)
        after = await asyncio.gather(*(self._stats(host) for host in live))
        costs = self.result.costs
        for earlier, later in zip(before, after, strict=True):
            fleet_costs.add(costs.idle, fleet_costs.subtract(later, earlier))
        costs.idle_run_seconds = len(runs) * (time.monotonic() - idle_started)
        costs.idle_runs_per_worker = len(runs) / len(live) if live else 0.0
        costs.idle_backstop_seconds = self.config.backstop_seconds
        self._late_stops = asyncio.create_task(self._send_stops(runs))
        # The shutdown begins while the stops are on their way, some answered, some not.
        await asyncio.sleep(self.random.uniform(*SHUTDOWN_STOPS_HEAD_START))

    async def _stats(self, host: int) -> dict[str, Any]:
        token = secrets.token_hex(6)
        self.hosts[host].send(f"stats {token}")
        reply = await self._wait(("reply", token), host, timeout=30)
        aws: dict[str, Any] = reply.get("aws", {})
        return aws

    async def _send_stops(self, runs: list[Run]) -> None:
        async with httpx.AsyncClient(
            base_url=self.route, headers={"X-Session-API-Key": self.key}, timeout=30
        ) as http:

            async def stop(run: Run) -> None:
                run.stop_sent_at = time.time()
                await self._stop(http, run.conversation_id)

            await asyncio.gather(*(stop(run) for run in runs))

    def _check_shutdown_rows(self) -> None:
        marked: Counter[str] = Counter()
        for run in self.runs.values():
            if not run.at_shutdown:
                continue
            item = (
                self._aws[0]
                .get_item(
                    TableName=self.stack.table_name,
                    Key={"conversation_id": {"S": run.conversation_id}},
                    ConsistentRead=True,
                )
                .get("Item", {})
            )
            if item.get("run_id", {}).get("S") == run.run_id and "loop_stopped_at" in item:
                marked[item.get("loop_stopped_via", {}).get("S", "?")] += 1
            else:
                self.result.shutdown_rows_unmarked += 1
        self.result.shutdown_rows_via = dict(marked)

    async def _shutdown(self) -> None:
        codes = await asyncio.gather(
            *(asyncio.to_thread(host.close, 30) for host in self.hosts if not host.killed)
        )
        self.result.clean_shutdowns = len(codes)
        if self._late_stops is not None:
            await self._late_stops
        self.result.clean_exits = sum(code == 0 for code in codes)
        # The lines read last (the shutdown's) are still on their way to the loop.
        await asyncio.sleep(0.2)
        listed = await asyncio.to_thread(self._aws[1].list_queues, QueueNamePrefix=self.prefix)
        self.result.queues_left = list(listed.get("QueueUrls", []))
        if self._victim is not None and self._victim.queue_url in self.result.queues_left:
            self.result.killed_queue_removed = False
        self.result.rows_not_stopped = await asyncio.to_thread(self._rows_not_stopped)
        await asyncio.to_thread(self._check_shutdown_rows)
        attributes = await asyncio.to_thread(
            self._aws[1].get_queue_attributes,
            QueueUrl=self.stack.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        self.result.stack_queue_left = sum(int(v) for v in attributes["Attributes"].values())

    def _rows_not_stopped(self) -> int:
        paginator = self._aws[0].get_paginator("scan")
        count = 0
        for page in paginator.paginate(TableName=self.stack.table_name, ConsistentRead=True):
            for item in page["Items"]:
                if item["conversation_id"]["S"].startswith("worker#"):
                    continue  # a liveness item (the killed worker's may outlive the run)
                count += item.get("status", {}).get("S") != "STOPPED"
                size = fleet_costs._item_bytes(item)
                self.result.costs.largest_row_bytes = max(self.result.costs.largest_row_bytes, size)
        return count

    # -- figures --

    def write_events(self, path: Path) -> None:
        """Every line the hosts and workers wrote, one JSON object a line, for a post-mortem."""
        with path.open("w", encoding="utf-8") as out:
            for host, source, document in self.events:
                out.write(json.dumps({"host": host, "source": source, **document}) + "\n")
            for run in self.runs.values():
                out.write(json.dumps({"source": "harness", "run": dataclasses.asdict(run)}) + "\n")

    def _tally(self) -> None:  # noqa: PLR0912 - one pass over the runs, each kind counted
        result = self.result
        self.tally_faults(self.events)
        runs = [run for run in self.runs.values() if not run.at_shutdown]
        hung = [run for run in runs if self.hung_run(run)]
        runs = [run for run in runs if not self.hung_run(run)]
        result.runs = len(runs)
        result.runs_targeted = sum(run.targeted for run in runs)
        latencies: list[float] = []
        for run in runs:
            if run.table_via == "worker_lost" or (run.stopped or {}).get("via") == "worker_lost":
                result.live_runs_released += 1
            if self.claimed_instance.get(run.run_id) not in {None, result.hung_instance} and (
                self.is_hung_host(run.host) and run.stopped is not None
            ):
                via = str(run.stopped.get("via"))
                result.after_hang_via[via] = result.after_hang_via.get(via, 0) + 1
            if not run.targeted:
                continue
            if run.stopped is not None:
                self._count_row(run)
                if run.confirmation not in {None, "no-run", "not-waited"}:
                    # Its worker lived to stop it: the answer should have confirmed it.
                    result.confirmations.healthy_stop(
                        run.conversation_id, run.confirmation, run.confirmed_ms
                    )
                via = str(run.stopped.get("via"))
                if via == "queue":
                    result.via_queue += 1
                elif via == "backstop":
                    result.via_backstop += 1
                else:
                    result.via_other[via] = result.via_other.get(via, 0) + 1
                latency = run.stopped.get("stop_to_stopped_ms")
                if isinstance(latency, int | float):
                    # The worker's figure is its wall clock less the route's: a skewed
                    # worker's is off by its offset, which the harness set and takes back.
                    latencies.append(float(latency) - 1000 * self.offset(run.host))
                else:
                    result.latencies_missing += 1
            elif run.died_with_worker:
                result.died_with_worker += 1
                if run.stop_sent_at is not None and run.stop_sent_at < self._killed_wall:
                    result.died_stop_in_flight += 1
            else:
                result.never += 1
        result.after_hang_runs = sum(result.after_hang_via.values())
        self._tally_hung(hung)
        ordered = sorted(latencies)
        if ordered:
            result.p50_ms = round(statistics.median(ordered), 1)
            result.p99_ms = round(_percentile(ordered, 0.99), 1)
            result.max_ms = round(ordered[-1], 1)
        self._tally_events()
        self._tally_costs()

    def _count_row(self, run: Run) -> None:
        self.result.table_checked += 1
        if run.table_problem is not None and self.hosts[run.host].killed:
            # Its worker logged the stop and was killed before writing the row.
            self.result.killed_rows_unwritten += 1
        elif run.table_problem is not None:
            self.result.table_disagreements += 1
            if len(self.result.table_examples) < 5:
                self.result.table_examples.append(
                    f"{run.conversation_id}/{run.run_id}: {run.table_problem}"
                )

    def _tally_hung(self, hung: list[Run]) -> None:
        """The runs the hung worker held across its hang: how each ended."""
        result = self.result
        result.hung_runs = len(hung)
        via: Counter[str] = Counter()
        for run in hung:
            if run.stopped is None:
                result.hung_runs_never += 1
                continue
            via[str(run.stopped.get("via"))] += 1
            # Released by a peer while it hung: the row says worker_lost, whatever ended the
            # loop after; otherwise the row must agree with the worker.
            if run.table_problem is not None and run.table_via != "worker_lost":
                result.hung_rows_wrong += 1
        result.hung_runs_via = dict(via)

    def _tally_costs(self) -> None:
        costs = self.result.costs
        for index, report in self.host_reports.items():
            fleet_costs.add(costs.workers, report.get("aws", {}))
            costs.worker_minutes += float(report.get("seconds", 0)) / 60
            for run in self.runs.values():
                if run.host != index:
                    continue
                costs.runs += 1
                started = self.started_wall.get(run.run_id)
                if started is not None and run.ended is not None:
                    costs.run_hours += max(0.0, _wall(run.ended) - started) / 3600
        costs.stops = self.result.stops_answered

    def _tally_events(self) -> None:
        handled: Counter[str] = Counter()
        duplicates: set[str] = set()  # stop ids whose cancel came after the stop was done
        wrong: dict[str, str] = {}  # one per run, however many lines tell of its end
        for _host, source, document in self.events:
            event = document.get("event")
            if source == "worker" and event == "cancel_handled":
                handled[str(document.get("outcome"))] += 1
                if document.get("outcome") == "duplicate":
                    duplicates.add(str(document.get("stop_id")))
            if source == "worker" and document.get("level") in {"ERROR", "CRITICAL"}:
                self.result.worker_errors += 1
            if event in {"conversation_stopped", "run_ended", "loop_ended"}:
                reason = self._wrong_kill(document)
                if reason is not None:
                    what = f"{document.get('conversation_id')}/{document.get('run_id')}"
                    wrong.setdefault(what, f"{what}: {source} {event}, {reason}")
        self.result.cancels_handled = dict(handled)
        self.result.backstop_raced = sum(
            1
            for run in self.runs.values()
            if run.stopped is not None
            and run.stopped.get("via") == "backstop"
            and str(run.stopped.get("stop_id")) in duplicates
        )
        self.result.wrong_kills = len(wrong)
        self.result.wrong_kill_examples = list(wrong.values())[:5]

    def _wrong_kill(self, document: dict[str, Any]) -> str | None:
        run_id = document.get("run_id")
        run = self.runs.get(str(run_id)) if run_id else None
        if run is not None and self.hung_run(run) and self.result.hung_declared:
            return None  # released while its worker hung: halted, not killed wrongly
        return wrong_kill(document, run)

    def _judge(self) -> None:
        result = self.result
        queue_share = result.via_queue / result.should_stop if result.should_stop else 0.0
        checks = {
            "not every stop was answered 200": result.stops_answered != result.stops_sent,
            "a targeted run was never stopped": result.never != 0,
            "stopped runs != runs a stop targeted (less the killed worker's)": (
                result.stopped != result.should_stop
            ),
            QUEUE_SHARE_MISSED: queue_share < QUEUE_SHARE_TARGET,
            "wrong kills": result.wrong_kills != 0,
            P99_MISSED: result.p99_ms is None or result.p99_ms >= P99_TARGET_MS,
            "rows disagree with the worker's log": result.table_disagreements != 0,
            "stopped runs without a stop_to_stopped_ms": result.latencies_missing != 0,
            "rows not checked for every stopped run": (result.table_checked != result.stopped),
            "starts that failed": result.starts_failed != 0,
            "queues left after the clean shutdown": bool(result.queues_left),
            "the killed worker's queue was not removed": (
                result.killed and result.killed_queue_removed is not True
            ),
            "no worker was killed": self.config.kill and not result.killed,
            "a worker did not exit 0 on its clean shutdown": (
                result.clean_exits != result.clean_shutdowns
            ),
            "rows not STOPPED at the end": result.rows_not_stopped != 0,
            "a stop at shutdown left its row without loop_stopped_via/at": (
                result.shutdown_rows_unmarked != 0
            ),
            "workers logged errors": result.worker_errors != 0,
            **fault_checks(result, self.config, RELEASE_MISSED),
            **fleet_confirm.checks(
                result.confirmations, self.config.stop_wait_seconds, result.killed
            ),
        }
        result.failures += [name for name, failed in checks.items() if failed]


def run_fleet(config: FleetConfig, events: Path | None = None) -> FleetResult:
    """The whole run: its own moto server, route and workers; torn down before returning."""
    key = secrets.token_urlsafe(32)
    base_env = dict(os.environ)
    with _moto_process() as endpoint, _environment({**AWS_DUMMY_ENV, "AWS_ENDPOINT_URL": endpoint}):
        stack = create_stack(endpoint, session_key=key, suffix=f"-{secrets.token_hex(4)}")
        # The stack's own prefix: the route and every worker get it (function_environment).
        prefix = stack.worker_queue_prefix
        route_env = {
            **stack.function_environment(),
            "STOP_WAIT_SECONDS": str(config.stop_wait_seconds),
        }

        async def main() -> FleetResult:
            asyncio.get_running_loop().set_default_executor(
                ThreadPoolExecutor(max_workers=64, thread_name_prefix="fleet")
            )
            fleet = Fleet(config, stack, key, prefix, base_env=base_env, out=sys.stdout)
            route_counter = fleet_costs.RequestCounter()
            route_counter.install(_package_session())  # before the route makes its clients
            tally, route_output = _Tally(), _RouteOutput()
            with (
                _environment(route_env),
                _stop_route(route_env, tally) as route,
                contextlib.redirect_stdout(route_output),
            ):
                fleet.route = route
                try:
                    result = await fleet.run()
                    result.costs.route = route_counter.snapshot()
                    result.route_errors = sum(tally.errors.values()) + route_output.error_lines
                    result.route_warnings = dict(tally.warnings)
                    if route_output.warning_lines:
                        warned = route_output.warning_lines
                        result.route_warnings["request line at WARNING"] = warned
                    if result.route_errors:
                        result.failures.append("the route logged errors")
                    return result
                finally:
                    if events is not None:
                        fleet.write_events(events)

        return asyncio.run(main())


# -- the document --------------------------------------------------------------------------


def _package_session() -> Any:
    from openhands_stop.aws.clients import _session

    return _session()


def _commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH, fixed args
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def _backstop_grace() -> str:
    from openhands_stop.worker import WorkerSettings

    field_info = WorkerSettings.model_fields.get("backstop_grace_seconds")
    return "unknown" if field_info is None else f"{field_info.default:g} s"


def _settings_text(config: FleetConfig) -> str:
    return (
        f"{config.workers} workers, `QUEUE_HEARTBEAT_SECONDS={config.heartbeat_seconds:g}`, "
        f"`BACKSTOP_SECONDS={config.backstop_seconds:g}`, "
        f"`WAIT_TIME_SECONDS={config.wait_time_seconds}`"
    )


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def render_section(result: FleetResult) -> str:
    """The fleet section of docs/reliability.md, markers included."""
    config = result.config
    share = result.via_queue / result.should_stop if result.should_stop else 0.0
    mark = {True: "ok", False: "**FAILED**"}
    other = ", ".join(f"{via} {count}" for via, count in sorted(result.via_other.items()))
    removed = {
        True: f"deleted by a peer, gone {result.killed_queue_removed_after_s} s after the kill",
        False: "**still there**",
        None: "no worker killed",
    }[result.killed_queue_removed]
    killed = (
        f"SIGKILL with {result.killed_runs_live} loops running that no stop was sent for yet"
        if result.killed
        else "none"
    )
    rows = [
        ("Stops answered 200", f"{result.stops_answered:,} of {result.stops_sent:,}, "
         f"{result.stops_repeated} of them a stop sent again once carried out, "
         f"{result.shutdown_stops} sent as the workers shut down "
         f"({result.stop_retries} retries; statuses {result.statuses})", "all",
         result.stops_answered == result.stops_sent),
        ("Runs a stop targeted", f"{result.runs_targeted:,} (of {result.runs:,} runs started; "
         f"{result.moved_restarts} restarts on another worker)", "", True),
        ("Starts that failed (register or claim)", f"{result.starts_failed} "
         f"({result.start_retries} retried; errors seen: {result.start_errors or 'none'})", "0",
         result.starts_failed == 0),
        ("Runs that died with the killed worker", f"{result.died_with_worker}, reported "
         f"apart, not as never ({result.died_stop_in_flight} with their stop sent before the "
         f"kill; {result.starts_lost_with_worker} starts lost with it)", "", True),
        ("Loops stopped via the queue", f"{result.via_queue:,} ({share:.2%} of "
         f"{result.should_stop:,})", f">= {QUEUE_SHARE_TARGET:.0%}", share >= QUEUE_SHARE_TARGET),
        ("Loops stopped via the backstop", f"{result.via_backstop:,}, of which "
         f"{result.backstop_raced:,} raced their cancel: it arrived after, as a duplicate"
         + (f" (other: {other})" if other else ""), "", True),
        ("Loops never stopped", f"{result.never}", "0", result.never == 0),
        ("Stopped / should have stopped", f"{result.stopped:,} / {result.should_stop:,}",
         "100%", result.stopped == result.should_stop and result.never == 0),
        ("Wrong kills (a loop ended with no stop sent for its run)", f"{result.wrong_kills}",
         "0", result.wrong_kills == 0),
        ("Rows showing loop_stopped_via/at for the stopped run", f"{result.table_checked:,} "
         f"checked, {result.table_disagreements} wrong"
         + (f", {result.killed_rows_unwritten} left unwritten by the killed worker"
            if result.killed_rows_unwritten else ""), "all",
         result.table_disagreements == 0 and result.table_checked == result.stopped),
        ("Stop-to-stopped p50 / p99 / max", f"{_ms(result.p50_ms)} / {_ms(result.p99_ms)} / "
         f"{_ms(result.max_ms)} over {result.stopped - result.latencies_missing:,} stops"
         + (f" ({result.latencies_missing} without a figure)" if result.latencies_missing
            else ""), f"p99 < {P99_TARGET_MS:.0f} ms",
         result.p99_ms is not None and result.p99_ms < P99_TARGET_MS
         and result.latencies_missing == 0),
        ("Cancels handled without a stop (worker's cancel_handled)",
         ", ".join(f"{k} {v}" for k, v in sorted(result.cancels_handled.items())) or "none",
         "", True),
        ("Killed worker", f"{killed}; its queue: {removed}", "removed",
         result.killed_queue_removed is not False),
        *fault_rows(result, config),
        *fleet_confirm.rows(result.confirmations, config.stop_wait_seconds, result.killed),
        ("AWS requests per worker-minute, by kind (workers)", ", ".join(
            f"{kind} {result.costs.per_worker_minute(kind):.1f}"
            for kind in sorted(result.costs.workers.get("requests", {}))) or "none", "", True),
        ("Queues left under the prefix after the clean shutdown", f"{len(result.queues_left)}"
         + (f": {', '.join(result.queues_left)}" if result.queues_left else ""), "0",
         not result.queues_left),
        ("Workers exiting 0 on the clean shutdown",
         f"{result.clean_exits} of {result.clean_shutdowns}", "all",
         result.clean_exits == result.clean_shutdowns),
        ("Rows not STOPPED at the end", f"{result.rows_not_stopped}", "0",
         result.rows_not_stopped == 0),
        ("Stops sent as the workers shut down: rows showing how the loop ended",
         f"{result.shutdown_stops - result.shutdown_rows_unmarked} of {result.shutdown_stops} "
         f"(via: {result.shutdown_rows_via or 'none'})", "all",
         result.shutdown_rows_unmarked == 0),
        ("Log lines at ERROR from the workers / the route",
         f"{result.worker_errors} / {result.route_errors}", "0 / 0",
         result.worker_errors == 0 and result.route_errors == 0),
        ("The route's warnings, by event", ", ".join(
            f"{event} {count}" for event, count in sorted(result.route_warnings.items()))
         or "none", "", True),
        ("Messages left on the stack queue", f"{result.stack_queue_left}", "", True),
    ]  # fmt: skip
    verdict = "every target met" if result.ok else "TARGETS MISSED"
    lines = [
        SECTION_BEGIN,
        "## Fleet: many workers, restarts and a crash",
        "",
        "<!-- Generated by `make fleet` (local/fleet.py); replaced on each run. -->",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from commit `{_commit() or 'unknown'}`"
        f" in {result.seconds:.0f} s. **Verdict: {verdict}.**",
        "",
        f"{config.workers} worker processes (`local/fleet_host.py`, one `Worker` each, all "
        f"with the same environment: the stack queue, `WORKER_QUEUE_PREFIX`, "
        f"`BACKSTOP_SECONDS={config.backstop_seconds:g}`, "
        f"`QUEUE_HEARTBEAT_SECONDS={config.heartbeat_seconds:g}`, "
        f"`ORPHAN_QUEUE_SECONDS={config.orphan_seconds:g}`), the stop route on uvicorn and "
        "moto's server, all on 127.0.0.1. "
        f"{config.conversations:,} conversations, each started and stopped {config.cycles} "
        f"times (up to {config.in_flight} at once; a restart goes to another worker with "
        f"probability {config.move_share:g}); "
        + (
            f"one worker killed with SIGKILL after {config.kill_after:.0%} of the stops. "
            if config.kill
            else "no worker killed. "
        )
        + (
            f"Another worker's event loop blocked for {config.hang_seconds:g} s after "
            f"{config.hang_after:.0%} of the stops (its runs held across the hang are "
            "counted apart). "
            if config.hang
            else ""
        )
        + (
            f"Workers 0 and 1 run with their wall clocks {config.skew_seconds:g} s ahead and "
            "behind the whole run (`FLEET_CLOCK_OFFSET_SECONDS`). "
            if config.skew_seconds
            else ""
        )
        + f"Then {config.shutdown_stops} runs per live worker are held idle "
        f"{config.idle_seconds:g} s (the backstop's steady cost) and stopped as the workers "
        "shut down. "
        "Stop-to-stopped is the worker's `stop_to_stopped_ms`: from the route's "
        "`requested_at` to the loop stopped (a skewed worker's, less the offset the harness "
        "gave it). After each stop the harness waits until the row "
        "shows `loop_stopped_via` and `loop_stopped_at` for that run before restarting it. "
        "The backstop acts on a stop recorded at least `BACKSTOP_GRACE_SECONDS` "
        f"({_backstop_grace()}, the default) ago: a stop via the backstop is one whose cancel "
        'was later than that, or lost ("raced": it arrived after all, as a duplicate). '
        "Times describe this 2-core machine shared with the emulation, not AWS.",
        "",
        "| Figure | Value | Target | Result |",
        "|---|---|---|---|",
        *[
            f"| {name} | {value.replace('|', '/')} | {target} | {mark[ok]} |"
            for name, value, target, ok in rows
        ],
        "",
        *(f"- **Failed:** {failure}" for failure in result.failures),
        *(f"- Wrong kill: {example}" for example in result.wrong_kill_examples),
        *(f"- Row: {example}" for example in result.table_examples),
        SECTION_END,
    ]
    return "\n".join(line for line in lines) + "\n"


def _section_span(document: str) -> tuple[int, int] | None:
    """Where the fleet section is: from its first marker to the line end after its last."""
    begin = document.find(SECTION_BEGIN)
    end = document.find(SECTION_END, begin)
    if begin < 0 or end < 0:
        return None
    end += len(SECTION_END)
    if document.startswith("\n", end):
        end += 1
    return begin, end


def existing_section(document: str) -> str | None:
    """The fleet section of a document, markers included, if it has one."""
    span = _section_span(document)
    return None if span is None else document[span[0] : span[1]]


def splice_section(document: str, section: str) -> str:
    """Put ``section`` in place of the document's fleet section, or before "## Every test"
    (else at the end) when it has none; the rest of the document stays as it is."""
    span = _section_span(document)
    if span is not None:
        return document[: span[0]] + section + document[span[1] :]
    anchor = document.find("\n## Every test")
    if anchor < 0:
        return document.rstrip("\n") + "\n\n" + section
    return document[: anchor + 1] + section + "\n" + document[anchor + 1 :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", nargs="?", choices=["drive", "moto"], default="drive")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="the size pytest runs")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--conversations", type=int)
    parser.add_argument("--cycles", type=int)
    parser.add_argument("--max-seconds", type=float)
    parser.add_argument(
        "--dwell", type=float, nargs=2, metavar=("MIN", "MAX"), help="seconds a loop runs"
    )
    parser.add_argument("--output", type=Path, help="write the section into this document")
    parser.add_argument("--events", type=Path, help="write every line the processes wrote here")
    parser.add_argument("--costs", type=Path, help="write the cost section into this document")
    args = parser.parse_args(argv)
    if args.role == "moto":
        _moto_main(args.port)
        return 0
    config = SMALL if args.small else FULL
    overrides = {
        name: value
        for name, value in {
            "workers": args.workers,
            "conversations": args.conversations,
            "cycles": args.cycles,
            "max_seconds": args.max_seconds,
            "dwell_seconds": tuple(args.dwell) if args.dwell else None,
        }.items()
        if value is not None
    }
    config = dataclasses.replace(config, **overrides)
    print(
        f"fleet: {config.workers} workers, {config.conversations} conversations x "
        f"{config.cycles} cycles, deadline {config.max_seconds:.0f} s",
        flush=True,
    )
    result = run_fleet(config, events=args.events)
    section = render_section(result)
    print(section)
    if args.output:
        document = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        args.output.write_text(splice_section(document, section), encoding="utf-8")
        print(f"wrote the fleet section of {args.output}")
    if args.costs:
        costs = fleet_costs.render_costs(
            result.costs,
            commit=_commit(),
            generated=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            fleet_settings=_settings_text(config),
        )
        print(costs)
        document = args.costs.read_text(encoding="utf-8") if args.costs.exists() else ""
        args.costs.write_text(fleet_costs.splice_costs(document, costs), encoding="utf-8")
        print(f"wrote the cost section of {args.costs}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
