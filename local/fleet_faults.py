"""``make fleet``'s failures: a worker SIGKILLed, one hung past the orphan age, two skewed clocks.

A mixin of ``local.fleet.Fleet`` (kept apart so fleet.py stays readable):

- **The kill.** After ``kill_after`` of the stops, the worker running the most loops no stop
  was sent for yet (never a skewed one) is killed with SIGKILL. From then on the harness
  watches the table's ``runs-by-worker`` index for its instance and its queue: the release is
  done when no row names it any more (each of its runs' rows ``STOPPED``, with its loop's end
  recorded: ``worker_lost`` for those it still held) and the queue is gone; that moment,
  from the kill, is compared with ``ORPHAN_QUEUE_SECONDS + 2 x QUEUE_HEARTBEAT_SECONDS + 5``.
  Its conversations wait for the release, then are started again on a live worker.
- **The hang.** After ``hang_after`` of the stops, another unskewed worker gets ``hang``: its
  event loop sleeps past the orphan age plus two beats and more. Peers must declare it dead
  and release what it held; when it resumes it must learn so (``worker_declared_dead``),
  halt those loops, join again as a new instance, and the runs it claims afterwards must be
  stopped via its new queue. The runs it held across the hang are counted apart: their end
  is reported by how it came, and a loop it halted because its run was released is not a
  wrong kill.
- **Skewed clocks.** Hosts 0 and 1 run with their wall clocks ``skew_seconds`` ahead and
  behind (``FLEET_CLOCK_OFFSET_SECONDS``, read by ``local.fleet_host`` alone) for the whole
  run; no live worker may be declared dead, no live queue deleted, no live run released.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import httpx

from local import fleet_confirm

if TYPE_CHECKING:
    from local.emulation import Stack
    from local.fleet import FleetConfig, FleetResult, Host, Run

RUNS_BY_WORKER_INDEX = "runs-by-worker"
CLOCK_OFFSET_VARIABLE = "FLEET_CLOCK_OFFSET_SECONDS"  # read by local.fleet_host alone


class Faults:
    """The kill, the hang and the skew, as ``Fleet`` drives and counts them."""

    if TYPE_CHECKING:
        config: FleetConfig
        result: FleetResult
        hosts: list[Host]
        runs: dict[str, Run]
        stack: Stack
        _aws: tuple[Any, Any]
        _kill_now: asyncio.Event
        _victim: Host | None
        _killed_at: float | None
        _killed_wall: float
        route: str
        key: str

        def _say(self, text: str) -> None: ...

    _release_done: asyncio.Event
    _release_task: asyncio.Task[None] | None
    _dead_stops_task: asyncio.Task[None] | None
    _hang_now: asyncio.Event
    _hung: Host | None
    _hang_wall: float
    _hang_end_monotonic: float | None
    _steer_to_hung: int
    instances: dict[int, str]  # the host's current instance
    declared: dict[int, list[str]]  # instances a host learnt were declared dead
    claimed_instance: dict[str, str]  # run id -> the instance its claim recorded

    def _init_faults(self) -> None:
        self._release_done = asyncio.Event()
        self._release_task = None
        self._dead_stops_task = None
        self._hang_now = asyncio.Event()
        self._hung = None
        self._hang_wall = math.inf
        self._hang_end_monotonic = None
        self._steer_to_hung = 3
        self.instances = {}
        self.declared = {}
        self.claimed_instance = {}

    def offset(self, index: int) -> float:
        """The wall-clock offset host ``index`` runs with."""
        return {0: self.config.skew_seconds, 1: -self.config.skew_seconds}.get(index, 0.0)

    # -- the kill ------------------------------------------------------------------------

    def _live_runs(self) -> Counter[int]:
        return Counter(
            run.host
            for run in self.runs.values()
            if not run.targeted and run.stopped is None and run.ended is None
        )

    async def _killer(self) -> None:
        await self._kill_now.wait()
        live_runs = self._live_runs()
        candidates = [h for h in self.hosts if h.alive and not self.offset(h.index)]
        victim = max(candidates, key=lambda host: live_runs.get(host.index, 0))
        self.result.killed_runs_live = live_runs.get(victim.index, 0)
        self._victim = victim
        self._killed_at = time.monotonic()
        self._killed_wall = time.time()
        victim.kill()
        self.result.killed = True
        self.result.victim_instance = self.instances.get(victim.index)
        self._release_task = asyncio.create_task(self._watch_release(victim, self._killed_at))
        self._dead_stops_task = asyncio.create_task(self._stop_before_release(victim))
        self._say(
            f"fleet: killed worker {victim.index} (SIGKILL) with "
            f"{self.result.killed_runs_live} loops running that no stop was sent for yet",
        )

    async def _stop_before_release(self, victim: Host) -> None:
        """Stop a few of the killed worker's running runs at once, before its peers release
        them: each answer comes within the wait, and never says ``confirmed``."""
        chosen = [
            run
            for run in self.runs.values()
            if run.host == victim.index and not run.targeted and run.stopped is None
        ][: fleet_confirm.DEAD_STOPS]
        async with httpx.AsyncClient(
            base_url=self.route, headers={"X-Session-API-Key": self.key}, timeout=60
        ) as http:

            async def stop(run: Run) -> None:
                started = time.monotonic()
                response = await http.post(f"/api/conversations/{run.conversation_id}/stop")
                outcome = response.headers.get(fleet_confirm.CONFIRMATION_HEADER, "none")
                if response.status_code != 200:
                    outcome = f"status {response.status_code}"
                waited = response.headers.get(fleet_confirm.WAITED_MS_HEADER)
                self.result.confirmations.dead_stop(
                    outcome,
                    (time.monotonic() - started) * 1000,
                    float(waited) if waited else None,
                )

            await asyncio.gather(*(stop(run) for run in chosen))

    def _index_rows(self, instance: str) -> int:
        response = self._aws[0].query(
            TableName=self.stack.table_name,
            IndexName=RUNS_BY_WORKER_INDEX,
            KeyConditionExpression="worker_instance = :i",
            ExpressionAttributeValues={":i": {"S": instance}},
            Select="COUNT",
        )
        return int(response.get("Count", 0))

    async def _watch_release(self, victim: Host, killed_at: float) -> None:
        """From the kill on: until no row names the victim's instance and its queue is gone
        (bounded); then how each of its runs' rows says its loop ended."""
        instance = self.result.victim_instance
        deadline = killed_at + self.config.release_bound + 20
        try:
            while time.monotonic() < deadline:
                rows = await asyncio.to_thread(self._index_rows, instance) if instance else 0
                queue = await self._queue_exists(victim.queue_url) if victim.queue_url else False
                if rows == 0 and self.result.killed_queue_removed_after_s is None and not queue:
                    self.result.killed_queue_removed = True
                    self.result.killed_queue_removed_after_s = round(
                        time.monotonic() - killed_at, 1
                    )
                if rows == 0 and not queue:
                    self.result.released_after_s = round(time.monotonic() - killed_at, 1)
                    break
                await asyncio.sleep(0.25)
            else:
                self.result.killed_queue_removed = not (
                    victim.queue_url and await self._queue_exists(victim.queue_url)
                )
            ended: Counter[str] = Counter()
            for run in list(self.runs.values()):
                if run.host != victim.index or self.claimed_instance.get(run.run_id) != instance:
                    continue
                if run.stopped is not None and run.ended is not None:
                    continue  # stopped (and seen so) before the kill
                item = await asyncio.to_thread(self._row, run.conversation_id)
                if item.get("run_id", {}).get("S") != run.run_id:
                    ended["row of another run"] += 1
                else:
                    ended[item.get("loop_stopped_via", {}).get("S", "not recorded")] += 1
            self.result.victim_rows_via = dict(ended)
            self.result.released_runs = ended.get("worker_lost", 0)
        finally:
            self._release_done.set()

    def _row(self, conversation_id: str) -> dict[str, Any]:
        item: dict[str, Any] = (
            self._aws[0]
            .get_item(
                TableName=self.stack.table_name,
                Key={"conversation_id": {"S": conversation_id}},
                ConsistentRead=True,
            )
            .get("Item", {})
        )
        return item

    async def _queue_exists(self, url: str) -> bool:
        name = url.rsplit("/", 1)[-1]
        listed = await asyncio.to_thread(self._aws[1].list_queues, QueueNamePrefix=name)
        return any(found.endswith("/" + name) for found in listed.get("QueueUrls", []))

    async def _after_release(self) -> None:
        """Hold what follows a run of the killed worker until the release is done (bounded)."""
        if self._killed_at is None:
            return
        left = self.config.release_bound + 25 - (time.monotonic() - self._killed_at)
        await asyncio.wait({asyncio.ensure_future(self._release_done.wait())}, timeout=left)

    async def _await_release(self) -> None:
        if self._release_task is not None:
            await self._release_task
        if self._dead_stops_task is not None:
            await self._dead_stops_task

    # -- the hang ------------------------------------------------------------------------

    async def _hanger(self) -> None:
        await self._hang_now.wait()
        live_runs = self._live_runs()
        candidates = [h for h in self.hosts if h.alive and not self.offset(h.index)]
        if not candidates:
            return
        hung = max(candidates, key=lambda host: live_runs.get(host.index, 0))
        self._hung = hung
        self.result.hung = True
        self.result.hung_instance = self.instances.get(hung.index)
        self.result.hang_seconds = self.config.hang_seconds
        self._hang_wall = time.time()
        hung.send(f"hang {self.config.hang_seconds:g}")
        self._say(
            f"fleet: worker {hung.index}'s event loop blocked for {self.config.hang_seconds:g} s "
            f"with {live_runs.get(hung.index, 0)} loops running that no stop was sent for yet",
        )

    def is_hung_host(self, index: int) -> bool:
        return self._hung is not None and self._hung.index == index

    def hung_run(self, run: Run) -> bool:
        """Held by the hung worker's old instance when the hang began: counted apart."""
        if self._hung is None or run.host != self._hung.index:
            return False
        if self.claimed_instance.get(run.run_id) != self.result.hung_instance:
            return False
        end = run.stopped or run.ended
        return end is None or _stamp(end) >= self._hang_wall

    def stop_timeout(self, run: Run) -> float:
        base = self.config.backstop_seconds * 4 + 10
        if self.is_hung_host(run.host) or self._hang_now.is_set():
            return base + self.config.hang_seconds + self.config.orphan_seconds
        return base

    def tally_faults(self, events: list[tuple[int, str, dict[str, Any]]]) -> None:
        """Liveness as the workers logged it: who was declared, what was released."""
        result = self.result
        legit = {i for i in (result.victim_instance, result.hung_instance) if i}
        live_declared: list[str] = []
        live_released = 0
        queue_missing = 0
        rejoined_at: float | None = None
        for host, source, document in events:
            event = document.get("event")
            if source != "worker":
                continue
            instance = document.get("worker_instance")
            if event == "worker_lost" and instance not in legit:
                live_declared.append(str(instance))
            elif event == "runs_released" and instance not in legit:
                live_released += int(document.get("runs", 0))
            elif event == "worker_declared_dead":
                if self.is_hung_host(host) and instance == result.hung_instance:
                    result.hung_declared = True
                    result.hung_runs_halted_at_rejoin += int(document.get("runs_halted", 0))
                else:
                    live_declared.append(str(instance))
            elif event in {"worker_rejoined", "worker_queue_recreated"} and self.is_hung_host(host):
                result.hung_rejoined_by = str(event)
                rejoined_at = rejoined_at or _stamp(document)
            elif event == "own_queue_missing":
                hung_after = self.is_hung_host(host) and (
                    rejoined_at is None or _stamp(document) <= rejoined_at
                )
                queue_missing += not hung_after
                if self.is_hung_host(host):
                    result.hung_queue_missing_seen += 1
        result.live_workers_declared = live_declared
        result.live_queues_deleted = queue_missing
        result.live_runs_released += live_released
        result.skewed_hosts = {
            str(host.index): self.offset(host.index)
            for host in self.hosts
            if self.offset(host.index) and not host.killed
        }


def _stamp(document: dict[str, Any]) -> float:
    from local.fleet import _wall

    return _wall(document)


BACKSTOP_UNITS_TARGET = 72.0
"""Read units per idle run-hour (issue 17: at least 10x under the 720 of a strongly
consistent read of every held row every 5 s)."""


def _backstop_at_default(result: FleetResult) -> float:
    from local.fleet_costs import _defaults

    return result.costs.backstop_units_per_idle_run_hour(_defaults()["backstop"])


def fault_checks(result: FleetResult, config: FleetConfig, release_missed: str) -> dict[str, bool]:
    """The failures' targets, by the name a miss is reported under."""
    checks = {
        "a live worker was declared dead": bool(result.live_workers_declared),
        "a live run was released (worker_lost)": result.live_runs_released != 0,
        "a live worker's queue was deleted": result.live_queues_deleted != 0,
        "the skewed workers did not run the whole run": (
            config.skew_seconds != 0 and len(result.skewed_hosts) != 2
        ),
        f"backstop read units per idle run-hour over {BACKSTOP_UNITS_TARGET:g}": not (
            _backstop_at_default(result) <= BACKSTOP_UNITS_TARGET
        ),
    }
    if config.kill:
        checks[release_missed] = (
            result.released_after_s is None or result.released_after_s > config.release_bound
        )
        checks["a released conversation could not be started again on a peer"] = (
            result.restarted_on_peer != result.restart_needed
        )
        checks["a killed worker's row left without its loop's end"] = any(
            via != "worker_lost" and via in {"not recorded", "row of another run"}
            for via in result.victim_rows_via
        )
    if config.hang:
        checks["the hung worker did not learn it was declared dead and rejoin"] = not (
            result.hung and result.hung_declared and result.hung_rejoined_by == "worker_rejoined"
        )
        checks["a run the hung worker held never ended"] = result.hung_runs_never != 0
        checks["a hung worker's row disagrees (neither worker_lost nor its log)"] = (
            result.hung_rows_wrong != 0
        )
        checks["no run claimed after the hang was stopped via the new queue"] = (
            result.after_hang_via.get("queue", 0) == 0
        )
    return checks


def fault_rows(result: FleetResult, config: FleetConfig) -> list[tuple[str, str, str, bool]]:
    """The failures' rows of the rendered table: figure, value, target, met."""
    skew = ", ".join(f"worker {h} {o:+g} s" for h, o in sorted(result.skewed_hosts.items()))
    at_default = _backstop_at_default(result)
    rows = [
        ("Skewed wall clocks, the whole run", skew or "none", "2 workers",
         len(result.skewed_hosts) == 2 or not config.skew_seconds),
        ("Live workers declared dead / live queues deleted / live runs released (worker_lost)",
         f"{len(result.live_workers_declared)} / {result.live_queues_deleted} / "
         f"{result.live_runs_released}", "0 / 0 / 0",
         not result.live_workers_declared and not result.live_queues_deleted
         and not result.live_runs_released),
    ]  # fmt: skip
    if config.kill:
        released = result.released_after_s
        rows += [
            ("Killed worker's runs released (rows STOPPED, its queue gone)",
             f"{'not within the watch' if released is None else f'{released:g} s'} after the "
             f"kill; its runs' rows: {result.victim_rows_via or 'none'}",
             f"<= {config.release_bound:g} s (ORPHAN + 2 x HEARTBEAT + 5)",
             released is not None and released <= config.release_bound),
            ("Its conversations started again on a peer once released",
             f"{result.restarted_on_peer} of {result.restart_needed}; "
             f"{result.stops_after_release_answered} of {result.stops_after_release} stops "
             "sent after the release answered 200", "all",
             result.restarted_on_peer == result.restart_needed),
        ]  # fmt: skip
    if config.hang:
        rows += [
            ("Hung worker (event loop blocked past the orphan age)",
             f"blocked {result.hang_seconds:g} s; learnt it was declared dead: "
             f"{'yes' if result.hung_declared else 'no'} ({result.hung_runs_halted_at_rejoin} "
             f"loops halted then); joined again by {result.hung_rejoined_by or 'nothing'}",
             "declared, rejoined", result.hung_declared
             and result.hung_rejoined_by == "worker_rejoined"),
            ("Runs it held across the hang (counted apart)",
             f"{result.hung_runs}, ended via {result.hung_runs_via or 'none'}; "
             f"{result.hung_runs_never} never; {result.hung_rows_wrong} rows wrong",
             "all ended", result.hung_runs_never == 0 and result.hung_rows_wrong == 0),
            ("Runs it claimed after it resumed (new instance, new queue)",
             f"{result.after_hang_runs} stopped, via {result.after_hang_via or 'none'}",
             "via the queue", result.after_hang_via.get("queue", 0) > 0),
        ]  # fmt: skip
    rows.append(
        ("Backstop read units per idle run-hour",
         f"{at_default:,.1f} at the default BACKSTOP_SECONDS "
         f"({result.costs.backstop_units_per_idle_run_hour():,.1f} at this run's; "
         f"{result.costs.idle_runs_per_worker:g} idle runs per worker)",
         f"<= {BACKSTOP_UNITS_TARGET:g}", at_default <= BACKSTOP_UNITS_TARGET)
    )  # fmt: skip
    return rows
