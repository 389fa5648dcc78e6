"""Fallback cancels: a cancel on the stack queue for a run another worker holds.

The route sends a cancel to the stack queue when the row names no usable queue (a queue
deleted, a row of other code's). Every fleet worker drains that queue, so the one that
receives it is usually not the run's holder: it reads the row (strongly consistent), finds
the holder's instance, and sends the cancel, as received, on to that instance's queue
(FIFO deduplicates it by stop id if the route's own copy got there too). A holder that is
dead gets nothing: its runs are released by liveness (tests/worker/test_fallback_routing.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from openhands_stop.aws.worker_queues import WorkerQueues
from openhands_stop.aws.worker_roster import DynamoWorkerRoster
from openhands_stop.domain.ports import ClaimTable
from openhands_stop.worker.logs import log
from openhands_stop.worker.runs import Stop


class FallbackRouter:
    def __init__(
        self,
        table: ClaimTable,
        roster: DynamoWorkerRoster,
        queues: WorkerQueues,
        own_instance: Callable[[], str],
    ) -> None:
        self._table = table
        self._roster = roster
        self._queues = queues
        self._own_instance = own_instance

    async def __call__(self, stop: Stop, body: str) -> bool:
        return await asyncio.to_thread(self._route, stop, body)

    def _route(self, stop: Stop, body: str) -> bool:
        record = self._table.records([stop.conversation_id]).get(stop.conversation_id)
        holder = record.worker_instance if record is not None else None
        if (
            record is None
            or holder is None
            or holder == self._own_instance()
            or record.run_id is None
            or (stop.run_id is not None and stop.run_id != record.run_id)
            or record.loop_stopped_at is not None
            or stop.stop_id is None
        ):
            return False
        member = self._roster.member(holder)
        if member is None or member.dead:
            return False
        if not self._queues.forward(
            holder, body, group_id=stop.conversation_id, deduplication_id=stop.stop_id
        ):
            return False
        log(
            logging.INFO,
            "cancel_forwarded",
            conversation_id=stop.conversation_id,
            run_id=record.run_id,
            stop_id=stop.stop_id,
            worker_instance=holder,
        )
        return True
