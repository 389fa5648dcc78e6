"""``make fleet``'s failures: a worker SIGKILLed, one hung past the orphan age, two skewed clocks.

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
  behind (``FLEET_CLOCK_OFFSET_SECONDS``, read by ``local.fleet.host`` alone) for the whole
  run; no live worker may be declared dead, no live queue deleted, no live run released.

How the workers' logs tell of these is counted by ``local.fleet.tally``; the targets are
rows of ``local.fleet.checks``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from typing import TYPE_CHECKING

from local.fleet import confirm
from local.fleet.lines import wall

if TYPE_CHECKING:
    from local.fleet.processes import Host
    from local.fleet.result import TrackedRun
    from local.fleet.scenario import Fleet

RUNS_BY_WORKER_INDEX = "runs-by-worker"


class Faults:
    """The kill and the hang of one run, as its ``Fleet`` drives them."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.config = fleet.config
        self.result = fleet.result
        self.kill_now = asyncio.Event()
        self.victim: Host | None = None
        self.killed_at: float | None = None
        self.killed_wall = math.inf
        self._release_done = asyncio.Event()
        self._release_task: asyncio.Task[None] | None = None
        self._dead_stops_task: asyncio.Task[None] | None = None
        self.hang_now = asyncio.Event()
        self.hung: Host | None = None
        self._hang_wall = math.inf
        self.steer_to_hung = 3  # starts sent to the hung worker, claimed once it resumes

    def step_done(self, steps: int) -> None:
        """``steps`` stops done: the kill and the hang come at their share of them."""
        if steps >= self.config.kill_after * self.config.stops:
            self.kill_now.set()
        if steps >= self.config.hang_after * self.config.stops:
            self.hang_now.set()

    def _live_runs(self) -> Counter[int]:
        return Counter(
            run.host
            for run in self.fleet.runs.values()
            if not run.targeted and run.stopped is None and run.ended is None
        )

    def _most_loaded_unskewed(self) -> tuple[Host | None, int]:
        live_runs = self._live_runs()
        candidates = [h for h in self.fleet.hosts if h.alive and not self.config.offset(h.index)]
        if not candidates:
            return None, 0
        chosen = max(candidates, key=lambda host: live_runs.get(host.index, 0))
        return chosen, live_runs.get(chosen.index, 0)

    # -- the kill ------------------------------------------------------------------------

    async def killer(self) -> None:
        await self.kill_now.wait()
        victim, live = self._most_loaded_unskewed()
        assert victim is not None, "no unskewed worker alive to kill"
        self.result.killed_runs_live = live
        self.victim = victim
        self.killed_at = time.monotonic()
        self.killed_wall = time.time()
        victim.kill()
        self.result.killed = True
        self.result.victim_instance = self.fleet.lines.instances.get(victim.index)
        self._release_task = asyncio.create_task(self._watch_release(victim, self.killed_at))
        self._dead_stops_task = asyncio.create_task(self._stop_before_release(victim))
        self.fleet.say(
            f"fleet: killed worker {victim.index} (SIGKILL) with "
            f"{self.result.killed_runs_live} loops running that no stop was sent for yet",
        )

    async def _stop_before_release(self, victim: Host) -> None:
        """Stop a few of the killed worker's running runs at once, before its peers release
        them: each answer comes within the wait, and never says ``confirmed``."""
        chosen = [
            run
            for run in self.fleet.runs.values()
            if run.host == victim.index and not run.targeted and run.stopped is None
        ][: confirm.DEAD_STOPS]
        async with self.fleet.http(timeout=60) as http:

            async def stop(run: TrackedRun) -> None:
                started = time.monotonic()
                response = await http.post(f"/api/conversations/{run.conversation_id}/stop")
                outcome = response.headers.get(confirm.CONFIRMATION_HEADER, "none")
                if response.status_code != 200:
                    outcome = f"status {response.status_code}"
                waited = response.headers.get(confirm.WAITED_MS_HEADER)
                self.result.confirmations.dead_stop(
                    outcome,
                    (time.monotonic() - started) * 1000,
                    float(waited) if waited else None,
                )

            await asyncio.gather(*(stop(run) for run in chosen))

    def _index_rows(self, instance: str) -> int:
        response = self.fleet.dynamodb.query(
            TableName=self.fleet.stack.table_name,
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
            claimed = self.fleet.lines.claimed_instance
            for run in list(self.fleet.runs.values()):
                if run.host != victim.index or claimed.get(run.run_id) != instance:
                    continue
                if run.stopped is not None and run.ended is not None:
                    continue  # stopped (and seen so) before the kill
                item = await asyncio.to_thread(self.fleet.row, run.conversation_id)
                if item.get("run_id", {}).get("S") != run.run_id:
                    ended["row of another run"] += 1
                else:
                    ended[item.get("loop_stopped_via", {}).get("S", "not recorded")] += 1
            self.result.victim_rows_via = dict(ended)
            self.result.released_runs = ended.get("worker_lost", 0)
        finally:
            self._release_done.set()

    async def _queue_exists(self, url: str) -> bool:
        name = url.rsplit("/", 1)[-1]
        listed = await asyncio.to_thread(self.fleet.sqs.list_queues, QueueNamePrefix=name)
        return any(found.endswith("/" + name) for found in listed.get("QueueUrls", []))

    async def after_release(self) -> None:
        """Hold what follows a run of the killed worker until the release is done (bounded)."""
        if self.killed_at is None:
            return
        left = self.config.release_bound + 25 - (time.monotonic() - self.killed_at)
        await asyncio.wait({asyncio.ensure_future(self._release_done.wait())}, timeout=left)

    async def await_release(self) -> None:
        if self._release_task is not None:
            await self._release_task
        if self._dead_stops_task is not None:
            await self._dead_stops_task

    # -- the hang ------------------------------------------------------------------------

    async def hanger(self) -> None:
        await self.hang_now.wait()
        hung, live = self._most_loaded_unskewed()
        if hung is None:
            return
        self.hung = hung
        self.result.hung = True
        self.result.hung_instance = self.fleet.lines.instances.get(hung.index)
        self.result.hang_seconds = self.config.hang_seconds
        self._hang_wall = time.time()
        hung.send(f"hang {self.config.hang_seconds:g}")
        self.fleet.say(
            f"fleet: worker {hung.index}'s event loop blocked for {self.config.hang_seconds:g} s "
            f"with {live} loops running that no stop was sent for yet",
        )

    def steer(self, live: list[int]) -> int | None:
        """A few starts go to the hung worker: claimed once it resumes, by its new instance."""
        if self.hung is not None and self.steer_to_hung > 0 and self.hung.index in live:
            self.steer_to_hung -= 1
            return self.hung.index
        return None

    def is_hung_host(self, index: int) -> bool:
        return self.hung is not None and self.hung.index == index

    def hung_run(self, run: TrackedRun) -> bool:
        """Held by the hung worker's old instance when the hang began: counted apart."""
        if self.hung is None or run.host != self.hung.index:
            return False
        if self.fleet.lines.claimed_instance.get(run.run_id) != self.result.hung_instance:
            return False
        end = run.stopped or run.ended
        return end is None or wall(end) >= self._hang_wall

    def stop_timeout(self, run: TrackedRun) -> float:
        base = self.config.backstop_seconds * 4 + 10
        if self.is_hung_host(run.host) or self.hang_now.is_set():
            return base + self.config.hang_seconds + self.config.orphan_seconds
        return base
