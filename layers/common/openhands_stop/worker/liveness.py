"""A worker's liveness: it proves it is alive, judges a few peers, and releases the dead's runs.

Each worker process is an *instance* with a liveness item in the table
(``aws.worker_roster``) and, in a fleet, a queue of its own named after it
(``aws.worker_queues``). Every ``QUEUE_HEARTBEAT_SECONDS`` it adds one to its item's
counter, then reads the next two items in key order (a ring: each worker is watched by the
two before it) and remembers, on its own monotonic clock, since when each counter has not
moved. A counter still for ``ORPHAN_QUEUE_SECONDS`` is declared dead with a write
conditional on that very value; then the judge releases the dead instance's runs (each row
``STOPPED``, ``loop_stopped_via: worker_lost``, conditional on that instance and run),
deletes its queue, and, once the item has been dead for another ``ORPHAN_QUEUE_SECONDS``
(a claim of its last moment lands by then, and is released too), deletes the item.

No decision compares two hosts' clocks: a counter and one host's elapsed time. A live
worker is never declared, whatever its clock says; one that hung longer than the orphan
age is (it is indistinguishable from a dead one), and learns it at its next beat: it halts
what it held (those runs were released), and joins again as a new instance with a new
queue. Cost: one write and one small Query per worker per beat, whatever the fleet's size
(docs/worker.md, "Liveness"; tests/worker/test_liveness.py).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from openhands_stop.aws.worker_queues import WorkerQueues
from openhands_stop.aws.worker_roster import DynamoWorkerRoster, Member, new_instance
from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.domain.models import RunEnd
from openhands_stop.domain.ports import ClaimTable
from openhands_stop.worker.clock import Clock
from openhands_stop.worker.logs import log
from openhands_stop.worker.periodic import every
from openhands_stop.worker.runs import Run, Runs
from openhands_stop.worker.shutdown import Shutdown

JUDGED_PEERS = 2
"""How many successors each worker watches: a dead worker is caught while either of the two
before it in the ring lives."""
_READ_AHEAD = 4  # successors read per Query, so dead items in the way still leave two live


@dataclass
class _Watch:
    beat: dict[str, Any] | None
    since: float


class Liveness:
    """This worker's instance, its proof of life, and its judging of peers."""

    def __init__(
        self,
        roster: DynamoWorkerRoster,
        table: ClaimTable,
        runs: Runs,
        *,
        queues: WorkerQueues | None,
        stack_queue_url: str,
        worker_id: str,
        heartbeat_seconds: float,
        orphan_seconds: float,
        shutdown: Shutdown,
        clock: Clock,
    ) -> None:
        self._roster = roster
        self._table = table
        self._runs = runs
        self._queues = queues
        self._stack_queue_url = stack_queue_url
        self._worker_id = worker_id
        self._heartbeat_seconds = heartbeat_seconds
        self._orphan_seconds = orphan_seconds
        self._shutdown = shutdown
        self._monotonic = clock.monotonic
        self._wall = clock.wall
        self._lock = asyncio.Lock()
        self._watching: dict[str, _Watch] = {}
        self._dead_since: dict[str, float] = {}
        self._proved_at: float | None = None  # when the last beat that succeeded began
        self.instance = ""
        self.queue_url = ""

    # -- who this worker is ------------------------------------------------------------

    @property
    def opened(self) -> bool:
        return bool(self.instance)

    async def open(self) -> None:
        """Join the roster (once; later calls return at once), make the queue, sweep."""
        async with self._lock:
            if self.instance:
                return
            await self._join("worker_joined")
        if self._queues is not None:
            await self.sweep_unowned_queues()

    async def _join(self, event: str) -> None:
        """A new instance: its item first, then its queue (so every queue has an item)."""
        instance = new_instance()
        queue_url = self._queues.url_for(instance) if self._queues else self._stack_queue_url
        started = self._monotonic()
        await asyncio.to_thread(
            self._roster.join,
            instance,
            worker_id=self._worker_id,
            cancel_queue_url=queue_url if self._queues else None,
        )
        if self._queues is not None:
            queue_url = await asyncio.to_thread(self._queues.create, instance)
        self.instance, self.queue_url = instance, queue_url
        self._proved_at = started
        log(
            logging.INFO,
            event,
            worker_id=self._worker_id,
            worker_instance=instance,
            queue_url=queue_url,
        )

    async def identity(self) -> tuple[str, str]:
        """The instance and queue a claim records now. A worker that has not proved itself
        alive for half the orphan age (it hung, or its beats failed) beats first, so a
        claim is never recorded under an instance its peers may already have declared."""
        await self.open()
        if (
            self._proved_at is None
            or self._monotonic() - self._proved_at > self._orphan_seconds / 2
        ):
            await self.beat()
        return self.instance, self.queue_url

    # -- proving -----------------------------------------------------------------------

    async def beat(self) -> bool:
        """Add one to the counter. ``False``: peers declared this instance dead; its runs
        are halted (they were released) and it joins again as a new instance."""
        instance = self.instance
        started = self._monotonic()
        if await asyncio.to_thread(self._roster.beat, instance):
            self._proved_at = started
            return True
        async with self._lock:
            if self.instance != instance:
                return False  # joined again meanwhile
            await self._declared_dead(instance)
        return False

    async def _declared_dead(self, instance: str) -> None:
        """Peers declared this instance dead (and released its runs): halt them, join again.
        Called with the lock held."""
        ended = await self._runs.end_all(RunEnd.WORKER_LOST)
        log(
            logging.WARNING,
            "worker_declared_dead",
            worker_instance=instance,
            runs_halted=len(ended),
        )
        await self._join("worker_rejoined")

    async def queue_missing(self, missing_url: str) -> None:
        """Our queue ``missing_url`` is gone while we live (deleted by hand, or by a peer
        after a hang): a new instance and queue, and every run held here moved to them on
        its row. If peers had declared this instance dead (the queue went with it), its runs
        were released: they are halted instead, as at a refused beat."""
        if self._queues is None:
            return
        async with self._lock:
            old_instance, old_url = self.instance, self.queue_url
            if old_url != missing_url:
                return  # made again already (a rejoin, say, while this waited for the lock)
            if not await asyncio.to_thread(self._roster.beat, old_instance):
                await self._declared_dead(old_instance)
                return
            await self._join("worker_queue_recreated")
            moved = 0
            for run in self._runs.active():
                moved += await self._move(run, old_instance)
            # Peers finish the old instance's clean-up (anything not moved is released).
            try:
                await asyncio.to_thread(self._roster.mark_left, old_instance, by=self.instance)
            except DependencyFailure as failure:
                log(logging.WARNING, "old_instance_not_marked", error=str(failure))
            log(logging.INFO, "runs_moved", from_queue=old_url, runs=moved)

    async def follow(self, run: Run, claimed_instance: str) -> None:
        """A claim that landed under an instance this worker has since left (its queue was
        made again meanwhile): move the run to the current one too, or peers would release
        it with the old instance."""
        if claimed_instance == self.instance:
            return
        async with self._lock:
            await self._move(run, claimed_instance)

    async def _move(self, run: Run, old_instance: str) -> bool:
        try:
            return await asyncio.to_thread(
                self._table.move_run,
                run.conversation_id,
                run.run_id,
                worker_instance=old_instance,
                to_instance=self.instance,
                cancel_queue_url=self.queue_url,
                now=self._wall(),
            )
        except DependencyFailure as failure:
            log(
                logging.WARNING,
                "run_not_moved",
                conversation_id=run.conversation_id,
                error=str(failure),
            )
            return False

    # -- judging -----------------------------------------------------------------------

    async def judge(self) -> list[str]:
        """Watch the next peers in the ring; declare and clean up the dead: their instances."""
        peers = await asyncio.to_thread(self._roster.successors, self.instance, _READ_AHEAD)
        now = self._monotonic()
        live_watched = 0
        judged: list[Member] = []
        for member in peers:
            if member.dead:
                judged.append(member)
            elif live_watched < JUDGED_PEERS:
                live_watched += 1
                judged.append(member)
        seen = {member.instance for member in judged}
        for gone in set(self._watching) - seen:
            del self._watching[gone]
        for gone in set(self._dead_since) - seen:
            del self._dead_since[gone]
        cleaned: list[str] = []
        for member in judged:
            try:
                if await self._judge_one(member, now):
                    cleaned.append(member.instance)
            except DependencyFailure as failure:
                log(
                    logging.WARNING,
                    "peer_check_failed",
                    worker_instance=member.instance,
                    error=str(failure),
                )
        return cleaned

    async def _judge_one(self, member: Member, now: float) -> bool:
        if not member.dead:
            watch = self._watching.get(member.instance)
            if watch is None or watch.beat != member.beat:
                self._watching[member.instance] = _Watch(member.beat, now)
                return False
            if now - watch.since < self._orphan_seconds:
                return False
            declared = await asyncio.to_thread(
                self._roster.declare_dead,
                member.instance,
                observed_beat=member.beat,
                judge=self.instance,
            )
            del self._watching[member.instance]
            if not declared:
                return False  # it beat meanwhile: alive
            log(
                logging.WARNING,
                "worker_lost",
                worker_instance=member.instance,
                worker_id=member.worker_id,
                still_for_seconds=round(now - watch.since, 1),
            )
        await self._clean_up(member, now)
        return True

    async def _clean_up(self, member: Member, now: float) -> None:
        """Release the dead instance's runs, delete its queue; after the orphan age more,
        its item (idempotent: a peer that died midway is finished by the next)."""
        released = 0
        for row in await asyncio.to_thread(self._table.runs_of, member.instance):
            if row.run_id is None:
                continue
            released += await asyncio.to_thread(
                self._table.release_lost_run,
                row.conversation_id,
                row.run_id,
                worker_instance=member.instance,
                now=self._wall(),
            )
        if self._queues is not None:
            await asyncio.to_thread(self._queues.delete, self._queues.url_for(member.instance))
        if released:
            log(logging.INFO, "runs_released", worker_instance=member.instance, runs=released)
        since = self._dead_since.setdefault(member.instance, now)
        if now - since >= self._orphan_seconds:
            await asyncio.to_thread(self._roster.leave, member.instance)
            del self._dead_since[member.instance]
            log(logging.INFO, "worker_removed", worker_instance=member.instance)

    async def sweep_unowned_queues(self) -> list[str]:
        """At start: delete worker queues whose instance has no liveness item (its worker
        died before an upgrade to liveness items, or its clean-up was finished); one failing
        queue is logged and the sweep goes on."""
        assert self._queues is not None
        try:
            listed = await asyncio.to_thread(self._queues.listed)
            listed.pop(self.instance, None)
            owned = await asyncio.to_thread(self._roster.members, sorted(listed))
        except DependencyFailure as failure:
            log(logging.WARNING, "queue_sweep_failed", error=str(failure))
            return []
        swept: list[str] = []
        for instance, url in sorted(listed.items()):
            if instance in owned:
                continue
            try:
                await asyncio.to_thread(self._queues.delete, url)
            except DependencyFailure as failure:
                log(logging.WARNING, "queue_sweep_failed", queue_url=url, error=str(failure))
                continue
            swept.append(url)
            log(logging.INFO, "unowned_queue_deleted", queue_url=url)
        return swept

    # -- lifecycle ---------------------------------------------------------------------

    async def serve(self) -> None:
        """Beat, then judge, every heartbeat until the worker closes; failures are logged."""
        await every(
            self._heartbeat_seconds, self._shutdown, self._beat_and_judge, "liveness_failed"
        )

    async def _beat_and_judge(self) -> None:
        await self.beat()
        await self.judge()

    async def close(self) -> None:
        """A clean shutdown: delete the queue and the item, leaving nothing behind."""
        if not self.instance:
            return
        if self._queues is not None:
            try:
                await asyncio.to_thread(self._queues.delete, self.queue_url)
                log(logging.INFO, "worker_queue_deleted", queue_url=self.queue_url)
            except DependencyFailure as failure:
                # Its item stays too: a peer judges it dead and deletes both.
                log(logging.WARNING, "worker_queue_not_deleted", error=str(failure))
                return
        try:
            await asyncio.to_thread(self._roster.leave, self.instance)
        except DependencyFailure as failure:
            log(logging.WARNING, "worker_item_not_deleted", error=str(failure))
