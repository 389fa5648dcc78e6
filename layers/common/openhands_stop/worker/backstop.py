"""The backstop: re-read the rows of the runs held here, and stop those the row says are over.

A lost cancel (a dropped message, a queue swept away, a send that never happened) delays a
stop by at most one interval, never prevents it; and nothing a row holds can end the
backstop: a failure on one record is logged and the others are still handled, a failure of a
whole pass is logged and the next pass runs (tests/worker/test_backstop.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.domain.models import ConversationRecord
from openhands_stop.domain.ports import ClaimTable
from openhands_stop.worker.logs import log
from openhands_stop.worker.runs import Outcome, Run, Runs, Stop, row_ends


class Backstop:
    def __init__(
        self, table: ClaimTable, runs: Runs, *, interval_seconds: float, closing: asyncio.Event
    ) -> None:
        self._table = table
        self._runs = runs
        self._interval_seconds = interval_seconds
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
            if not row_ends(record, run):
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

    async def serve(self) -> None:
        """A pass every interval until the worker closes; no failure ends it."""
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=self._interval_seconds)
                return
            try:
                await self.once()
            except DependencyFailure as failure:
                log(logging.WARNING, "backstop_failed", error=str(failure))
            except Exception as error:
                log(logging.ERROR, "backstop_failed", error=type(error).__name__)
