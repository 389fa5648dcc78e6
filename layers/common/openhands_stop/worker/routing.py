"""Fallback cancels: a cancel on the stack's queue for a run another worker holds.

The route sends a cancel to the stack's queue when the row names no usable queue (a queue
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
from typing import TYPE_CHECKING

from openhands_stop.aws.failures import dependency_call, is_missing_queue
from openhands_stop.aws.worker_queues import WorkerQueues
from openhands_stop.aws.worker_roster import DynamoWorkerRoster
from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.domain.models import CancelMessage
from openhands_stop.domain.ports import ClaimTable
from openhands_stop.worker.logs import log

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class FallbackRouter:
    def __init__(
        self,
        table: ClaimTable,
        roster: DynamoWorkerRoster,
        queues: WorkerQueues,
        sqs: SQSClient,
        own_instance: Callable[[], str],
    ) -> None:
        self._table = table
        self._roster = roster
        self._queues = queues
        self._sqs = sqs
        self._own_instance = own_instance

    async def __call__(self, cancel: CancelMessage, body: str) -> bool:
        return await asyncio.to_thread(self._route, cancel, body)

    def _route(self, cancel: CancelMessage, body: str) -> bool:
        record = self._table.records([cancel.sid]).get(cancel.sid)
        holder = record.worker_instance if record is not None else None
        if (
            record is None
            or holder is None
            or holder == self._own_instance()
            or record.run_id is None
            or (cancel.run_id is not None and cancel.run_id != record.run_id)
            or record.loop_stopped_at is not None
        ):
            return False
        member = self._roster.member(holder)
        if member is None or member.dead:
            return False
        url = self._queues.url_for(holder)
        try:
            with dependency_call("sqs"):
                self._sqs.send_message(
                    QueueUrl=url,
                    MessageBody=body,
                    MessageGroupId=cancel.sid,
                    MessageDeduplicationId=cancel.stop_id,
                )
        except DependencyFailure as failure:
            if is_missing_queue(failure):
                return False  # the holder is making a new queue, or gone: liveness covers it
            raise
        log(
            logging.INFO,
            "cancel_forwarded",
            conversation_id=cancel.sid,
            run_id=record.run_id,
            stop_id=cancel.stop_id,
            worker_instance=holder,
        )
        return True
