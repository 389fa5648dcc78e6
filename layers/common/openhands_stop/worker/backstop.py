"""The backstop: re-read the rows of the runs held here, and stop those the row says are over.

A lost cancel (a dropped message, a queue swept away, a send that never happened) delays a
stop by at most the grace and one interval, never prevents it; and nothing a row holds can end the
backstop: a failure on one record is logged and the others are still handled, a failure of a
whole pass is logged and the next pass runs (tests/worker/test_backstop.py).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from openhands_stop.domain.models import ConversationRecord, utc_now
from openhands_stop.domain.ports import ClaimTable
from openhands_stop.worker.logs import log
from openhands_stop.worker.periodic import every
from openhands_stop.worker.runs import Outcome, Run, Runs, Stop, row_ends


class Backstop:
    def __init__(
        self,
        table: ClaimTable,
        runs: Runs,
        *,
        interval_seconds: float,
        grace_seconds: float,
        closing: asyncio.Event,
    ) -> None:
        self._table = table
        self._runs = runs
        self._interval_seconds = interval_seconds
        self._grace = timedelta(seconds=grace_seconds)
        self._closing = closing

    async def once(self) -> list[Outcome]:
        """One pass: read the rows of the active runs, stop each run its row says is over."""
        runs = {run.conversation_id: run for run in self._runs.active()}
        if not runs:
            return []
        records = await asyncio.to_thread(self._table.records, runs)
        found = await asyncio.gather(
            *(self._check(record, runs[cid]) for cid, record in records.items() if cid in runs)
        )
        return [outcome for outcome in found if outcome is not None]

    async def _check(self, record: ConversationRecord, run: Run) -> Outcome | None:
        try:
            if not row_ends(record, run) or self._cancel_may_be_on_its_way(record):
                return None
            return await self._runs.apply(Stop.from_record(record, run))
        except Exception as error:
            log(
                logging.ERROR,
                "backstop_record_failed",
                conversation_id=record.conversation_id,
                run_id=run.run_id,
                error=type(error).__name__,
            )
            return None

    def _cancel_may_be_on_its_way(self, record: ConversationRecord) -> bool:
        """A stop recorded less than the grace ago: its cancel is most likely in flight (the
        next pass acts if it was lost). A stop with no readable moment, or one in the future
        (a skewed clock, a row of other code's), is acted on now: nothing waits forever."""
        if record.stopped_at is None:
            return False
        return timedelta(0) <= utc_now() - record.stopped_at < self._grace

    async def serve(self) -> None:
        """A pass every interval until the worker closes; no failure ends it."""
        await every(self._interval_seconds, self._closing, self.once, "backstop_failed")
