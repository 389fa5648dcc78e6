"""The backstop: find the runs held here whose rows say they are over, and stop them.

A lost cancel (a dropped message, a queue deleted, a send that never happened) delays a
stop by at most the grace and one interval, never prevents it. One pass is one Query of
the table's runs-by-worker index for this worker (its runs' rows, small, packed into few
read units) and nothing when it holds no run: the cost grows with workers and stops, not
with runs times hours. The index is eventually consistent, so a run it does not show (a
deleted row, another run's, or a claim of the last moment) is confirmed by one strongly
consistent read before anything is stopped.

Every wait is measured on this worker's own monotonic clock, from the pass that first saw
the stop: no moment written by another host is compared with this one's. Nothing a row
holds can end the backstop: a failure on one record is logged and the others are still
handled, a failure of a whole pass is logged and the next pass runs
(tests/worker/test_backstop.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from openhands_stop.domain.models import ConversationRecord, ConversationStatus, RunEnd
from openhands_stop.domain.ports import ClaimTable, HeldRun
from openhands_stop.worker.logs import log
from openhands_stop.worker.periodic import every
from openhands_stop.worker.runs import Outcome, Run, Runs, Stop
from openhands_stop.worker.shutdown import Shutdown

Monotonic = Callable[[], float]


class Backstop:
    def __init__(
        self,
        table: ClaimTable,
        runs: Runs,
        instance: Callable[[], str],
        *,
        interval_seconds: float,
        grace_seconds: float,
        shutdown: Shutdown,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self._table = table
        self._runs = runs
        self._instance = instance
        self.interval_seconds = interval_seconds
        self._grace_seconds = grace_seconds
        self._shutdown = shutdown
        self._monotonic = monotonic
        self._first_seen: dict[str, float] = {}  # run id -> when a pass first saw it over

    async def once(self) -> list[Outcome]:
        """One pass: stop each run held here that its row says is over (after the grace)."""
        if self._runs.unresolved:
            await self._runs.resolve_unconfirmed()
        runs = {run.conversation_id: run for run in self._runs.active()}
        if not runs:
            self._first_seen.clear()
            return []
        held = await asyncio.to_thread(self._table.runs_of, self._instance())
        shown = {row.conversation_id: row for row in held}
        over: dict[str, Stop] = {}
        unseen: list[Run] = []
        for cid, run in runs.items():
            row = shown.get(cid)
            if row is None or row.run_id != run.run_id:
                unseen.append(run)
            elif row.status != ConversationStatus.RUNNING.value:
                over[cid] = _stop_of(run, row)
        if unseen:
            over.update(await self._confirm_gone(unseen))
        now = self._monotonic()
        for run_id in set(self._first_seen) - {stop.run_id for stop in over.values()}:
            del self._first_seen[run_id]
        due = []
        for cid, stop in over.items():
            assert stop.run_id is not None
            first = self._first_seen.setdefault(stop.run_id, now)
            if now - first >= self._grace_seconds:
                due.append((runs[cid], stop))
        found = await asyncio.gather(*(self._apply(run, stop) for run, stop in due))
        return [outcome for outcome in found if outcome is not None]

    async def _confirm_gone(self, unseen: list[Run]) -> dict[str, Stop]:
        """The index does not show these runs: read their rows strongly consistent."""
        records = await asyncio.to_thread(
            self._table.records, [run.conversation_id for run in unseen]
        )
        gone: dict[str, Stop] = {}
        for run in unseen:
            record = records.get(run.conversation_id)
            if run.ended_by(record):
                gone[run.conversation_id] = _stop_of(run, record)
        return gone

    async def _apply(self, run: Run, stop: Stop) -> Outcome | None:
        try:
            return await self._runs.apply(stop)
        except Exception as error:
            log(
                logging.ERROR,
                "backstop_record_failed",
                conversation_id=run.conversation_id,
                run_id=run.run_id,
                error=type(error).__name__,
            )
            return None

    def next_pass_in(self) -> float:
        """An interval, or less when a stop seen within the grace comes due before then:
        a lost cancel is carried out within the grace and one interval."""
        if not self._first_seen:
            return self.interval_seconds
        due = min(self._first_seen.values()) + self._grace_seconds - self._monotonic()
        return max(0.05, min(self.interval_seconds, due))

    async def serve(self) -> None:
        """A pass every interval until the worker closes; no failure ends it."""
        await every(self.next_pass_in, self._shutdown, self.once, "backstop_failed")


def _stop_of(run: Run, row: HeldRun | ConversationRecord | None) -> Stop:
    """The backstop's stop of ``run``, from the row that says it is over (``None``: gone)."""
    return Stop(
        run.conversation_id,
        run.run_id,
        row.stop_id if row is not None else None,
        row.stop_request_id if row is not None else None,
        row.stopped_at if row is not None else None,
        RunEnd.BACKSTOP,
    )
