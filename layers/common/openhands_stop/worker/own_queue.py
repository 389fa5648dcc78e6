"""A fleet worker's own cancel queue: created at start, kept alive, deleted at shutdown.

Every worker of a fleet is configured alike (``WORKER_QUEUE_PREFIX``), yet each cancel must
reach the one worker that runs its run: so each worker reads a queue of its own, which its
claims record, and the route sends each cancel to the queue its run's claim recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time

from openhands_stop.aws.cancel_inbox import SqsCancelInbox
from openhands_stop.aws.worker_queues import WorkerQueues
from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.worker.logs import log
from openhands_stop.worker.periodic import every


class OwnQueue:
    """Creates the worker's queue into ``inbox``, heartbeats it, sweeps dead peers' queues."""

    def __init__(
        self,
        queues: WorkerQueues,
        inbox: SqsCancelInbox,
        *,
        worker_id: str,
        heartbeat_seconds: float,
        orphan_seconds: float,
        closing: asyncio.Event,
    ) -> None:
        self._queues = queues
        self._inbox = inbox
        self._worker_id = worker_id
        self._heartbeat_seconds = heartbeat_seconds
        self._orphan_seconds = orphan_seconds
        self._closing = closing
        self._lock = asyncio.Lock()

    async def open(self) -> str:
        """Create the queue once (later calls return it), then sweep the prefix once."""
        async with self._lock:
            if self._inbox.queue_url:
                return self._inbox.queue_url
            await self._create("worker_queue_created")
        await self.sweep()
        return self._inbox.queue_url

    async def _create(self, event: str) -> None:
        url = await asyncio.to_thread(self._queues.create, self._worker_id, time.time())
        self._inbox.queue_url = url
        log(logging.INFO, event, worker_id=self._worker_id, queue_url=url)

    async def sweep(self) -> list[str]:
        """Delete the queues of workers whose heartbeat stopped (crashed, killed)."""
        try:
            swept = await asyncio.to_thread(
                self._queues.sweep,
                now=time.time(),
                orphan_after=self._orphan_seconds,
                keep=self._inbox.queue_url,
            )
        except DependencyFailure as failure:
            log(logging.WARNING, "orphan_sweep_failed", error=str(failure))
            return []
        for queue in swept:
            log(
                logging.INFO,
                "orphan_queue_deleted",
                queue_url=queue.queue_url,
                heartbeat_age_seconds=round(time.time() - (queue.heartbeat or 0), 1),
            )
        return [queue.queue_url for queue in swept]

    async def beat(self) -> None:
        """One heartbeat; a queue found gone (swept while this worker hung) is made again."""
        alive = await asyncio.to_thread(self._queues.heartbeat, self._inbox.queue_url, time.time())
        if not alive:
            async with self._lock:
                await self._create("worker_queue_recreated")

    async def serve(self) -> None:
        """Heartbeat and sweep every interval until the worker closes; failures are logged."""
        await every(
            self._heartbeat_seconds, self._closing, self._beat_and_sweep, "queue_upkeep_failed"
        )

    async def _beat_and_sweep(self) -> None:
        await self.beat()
        await self.sweep()

    async def close(self) -> None:
        """Delete the queue: a clean shutdown leaves nothing behind."""
        url = self._inbox.queue_url
        if not url:
            return
        try:
            await asyncio.to_thread(self._queues.delete, url)
        except DependencyFailure as failure:
            # Left behind: a live peer sweeps it once its heartbeat is old enough.
            log(logging.WARNING, "worker_queue_not_deleted", queue_url=url, error=str(failure))
            return
        log(logging.INFO, "worker_queue_deleted", worker_id=self._worker_id, queue_url=url)
