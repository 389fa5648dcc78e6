"""Driving a fleet run: every conversation started and stopped ``cycles`` times over HTTP,
the faults on their cue (``local.fleet.faults``), then the shutdown (``local.fleet.shutdown``)
and the counting (``local.fleet.tally``). ``run_fleet`` is the whole run, processes included."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import httpx

from local.emulation import AWS_DUMMY_ENV, Stack, create_stack
from local.fleet import confirm, shutdown
from local.fleet.config import FleetConfig
from local.fleet.counter import RequestCounter
from local.fleet.faults import Faults
from local.fleet.host import CLOCK_OFFSET_VARIABLE
from local.fleet.lines import HostLines
from local.fleet.processes import (
    Host,
    HostDied,
    LogTally,
    RouteOutput,
    counted_route,
    environment,
    moto_process,
)
from local.fleet.result import FleetResult, TrackedRun
from local.fleet.tally import tally

START_ATTEMPTS = 3


class Fleet:
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
        self.runs: dict[str, TrackedRun] = {}
        self.lines = HostLines(self.hosts, self.runs)
        self.faults = Faults(self)
        self.steps_done = 0
        self.late_stops: asyncio.Task[None] | None = None  # the stops sent at shutdown
        self.dynamodb, self.sqs = self._clients()

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

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def http(self, timeout: float = 30, connections: int | None = None) -> httpx.AsyncClient:
        """A client of the route, with the session key (httpx's pool limits, unless
        ``connections`` says how many at once)."""
        limits: dict[str, Any] = {}
        if connections is not None:
            limits["limits"] = httpx.Limits(max_connections=connections)
        return httpx.AsyncClient(
            base_url=self.route, headers={"X-Session-API-Key": self.key}, timeout=timeout, **limits
        )

    def row(self, conversation_id: str) -> dict[str, Any]:
        """The conversation's row, read strongly consistent (``{}`` if there is none)."""
        item: dict[str, Any] = self.dynamodb.get_item(
            TableName=self.stack.table_name,
            Key={"conversation_id": {"S": conversation_id}},
            ConsistentRead=True,
        ).get("Item", {})
        return item

    # -- one conversation --

    def _choose_host(self, previous: int | None) -> int:
        live = [host.index for host in self.hosts if host.alive]
        steered = self.faults.steer(live)
        if steered is not None:
            return steered
        if previous is None or previous not in live:
            return self.random.choice(live)
        if len(live) > 1 and self.random.random() < self.config.move_share:
            self.result.moved_restarts += 1
            return self.random.choice([index for index in live if index != previous])
        return previous

    async def start(self, conversation_id: str, host: int, cycle: int) -> TrackedRun | None:
        """Register and start it on ``host``; a failure other than a refused claim (an AWS
        call that gave up, say) is retried as a host would, and counted."""
        for attempt in range(START_ATTEMPTS):
            token = secrets.token_hex(6)
            self.hosts[host].send(f"start {conversation_id} {token}")
            try:
                reply = await self.lines.wait(("reply", token), host, timeout=60)
            except TimeoutError:
                reply = {"ok": False, "error": "no reply from the host"}
            if reply.get("ok"):
                run = TrackedRun(conversation_id, str(reply["run_id"]), host, cycle)
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

    async def stop(
        self, http: httpx.AsyncClient, conversation_id: str, run: TrackedRun | None = None
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
                outcome = response.headers.get(confirm.CONFIRMATION_HEADER, "none")
                self.result.confirmations.answered(outcome)
                if run is not None:
                    run.confirmation = outcome
                    confirmed_ms = response.headers.get(confirm.CONFIRMED_MS_HEADER)
                    run.confirmed_ms = float(confirmed_ms) if confirmed_ms else None
                return True
            self.result.stop_retries += 1
            await asyncio.sleep(1)
        return False

    async def _verify_row(self, run: TrackedRun) -> None:
        """The row must show this run's loop as stopped, and how, before anything restarts."""
        deadline = time.monotonic() + 15
        delay = 0.02
        item: dict[str, Any] = {}
        while time.monotonic() < deadline:
            item = await asyncio.to_thread(self.row, run.conversation_id)
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
        run.table_problem = problem  # counted by the tally, which knows the hung worker's runs

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
                    run = await self.start(conversation_id, host, cycle - 1)
                except HostDied:
                    # Killed while starting it: the row may be STARTING, or RUNNING for a run
                    # nobody runs; once released, the stop settles it, and it starts again.
                    self.result.starts_lost_with_worker += 1
                    await self.faults.after_release()
                    await self.stop(http, conversation_id)
                    self._step_done()
                    restart = True
                    continue
                if restart:
                    self.result.restart_needed += 1
                    self.result.restarted_on_peer += run is not None
                    restart = False
                if run is None:
                    await self.stop(http, conversation_id)
                    self._step_done()
                    continue
                await asyncio.sleep(self.random.uniform(*self.config.dwell_seconds))
                if self.hosts[host].killed:
                    await self.faults.after_release()
                run.stop_sent_at = time.time()
                answered = await self.stop(http, conversation_id, run)
                if self.hosts[host].killed and self.result.released_after_s is not None:
                    # Released: the stop answers "not running", and sends nothing.
                    self.result.stops_after_release += 1
                    self.result.stops_after_release_answered += answered
                try:
                    run.stopped = await self.lines.wait(
                        ("stopped", run.run_id), host, timeout=self.faults.stop_timeout(run)
                    )
                except HostDied:
                    run.died_with_worker = True
                    await self.faults.after_release()
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
                        await self.stop(http, conversation_id)
                self._step_done()

    def _step_done(self) -> None:
        self.steps_done += 1
        self.faults.step_done(self.steps_done)

    # -- the whole run --

    async def _progress(self, started: float) -> None:
        while True:
            await asyncio.sleep(5)
            stopped = Counter(
                str(run.stopped.get("via")) for run in self.runs.values() if run.stopped
            )
            died = sum(run.died_with_worker for run in self.runs.values())
            live = sum(host.alive for host in self.hosts)
            self.say(
                f"fleet: {time.monotonic() - started:5.0f} s  {self.steps_done}/"
                f"{self.config.stops} stops done  stopped {dict(stopped)}  died {died}  "
                f"workers alive {live}/{len(self.hosts)}",
            )

    async def run(self) -> FleetResult:
        started = time.monotonic()
        env = {**self.base_env, **self.config.worker_environment(self.stack, self.prefix)}
        self.hosts.extend(
            Host(n, {**env, CLOCK_OFFSET_VARIABLE: f"{self.config.offset(n):g}"}, self.lines.sink)
            for n in range(self.config.workers)
        )
        progress = asyncio.create_task(self._progress(started))
        try:
            await asyncio.wait_for(self._drive(started), self.config.max_seconds)
            self.result.completed = True
        except TimeoutError:
            self.result.harness_failures.append(f"not done within {self.config.max_seconds:.0f} s")
        finally:
            progress.cancel()
            await shutdown.shut_down(self)
            self.result.seconds = round(time.monotonic() - started, 1)
        tally(self)
        return self.result

    async def _drive(self, started: float) -> None:
        for host in self.hosts:
            await self.lines.wait(("ready", str(host.index)), host.index, timeout=60)
        self.say(
            f"fleet: {len(self.hosts)} workers ready in {time.monotonic() - started:.1f} s, "
            f"queues under {self.prefix}",
        )
        slots = asyncio.Semaphore(self.config.in_flight)
        killer = asyncio.create_task(self.faults.killer()) if self.config.kill else None
        hanger = asyncio.create_task(self.faults.hanger()) if self.config.hang else None
        ids = [f"fleet-{n:04d}" for n in range(self.config.conversations)]
        async with self.http(connections=self.config.in_flight) as http:
            outcomes = await asyncio.gather(
                *(self._conversation(http, cid, slots) for cid in ids), return_exceptions=True
            )
        errors = Counter(
            f"{type(error).__name__}: {error}"
            for error in outcomes
            if isinstance(error, BaseException)
        )
        self.result.harness_failures += [
            f"harness error x{n}: {text}" for text, n in errors.items()
        ]
        if hanger is not None:
            self.faults.hang_now.set()
            await hanger
        if killer is not None:
            self.faults.kill_now.set()
            await killer
            await self.faults.await_release()
        await shutdown.stops_at_shutdown(self)


def _package_session() -> Any:
    from openhands_stop.aws.clients import _session

    return _session()


def run_fleet(config: FleetConfig, events: Path | None = None) -> FleetResult:
    """The whole run: its own moto server, route and workers; torn down before returning."""
    key = secrets.token_urlsafe(32)
    base_env = dict(os.environ)
    with moto_process() as endpoint, environment({**AWS_DUMMY_ENV, "AWS_ENDPOINT_URL": endpoint}):
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
            route_counter = RequestCounter()
            route_counter.install(_package_session())  # before the route makes its clients
            log_tally, route_output = LogTally(), RouteOutput()
            with (
                environment(route_env),
                counted_route(route_env, log_tally) as route,
                contextlib.redirect_stdout(route_output),
            ):
                fleet.route = route
                try:
                    result = await fleet.run()
                    result.costs.route = route_counter.snapshot()
                    errors = sum(log_tally.errors.values()) + route_output.error_lines
                    result.route_errors = errors
                    result.route_warnings = dict(log_tally.warnings)
                    if route_output.warning_lines:
                        warned = route_output.warning_lines
                        result.route_warnings["request line at WARNING"] = warned
                    return result
                finally:
                    if events is not None:
                        fleet.lines.write(events)

        return asyncio.run(main())
