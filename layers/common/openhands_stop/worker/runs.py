"""The runs a worker holds, and how one is stopped: only by a stop that targets it.

A claim starts a run with its own id; a conversation can be started, stopped and started
again any number of times, here or elsewhere, and each cancel names the run it stops. So a
late cancel (a redrive, a duplicate past FIFO's window, a worker's leftover) finds its run
ended and stops nothing newer, and a restarted conversation's new run is stopped by its own
stop (tests/worker/test_runs.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.domain.models import (
    CancelMessage,
    ConversationRecord,
    ConversationStatus,
    RunEnd,
    utc_now,
)
from openhands_stop.domain.ports import ClaimResult, ClaimTable
from openhands_stop.worker.logs import log

AgentLoop = Callable[[str], Coroutine[Any, Any, object]]
"""An agent loop: called with the conversation id, runs until done or cancelled."""

Halt = Callable[[], Awaitable[object]]
"""What stops a loop the agent host runs itself (an OpenHands session's close)."""

_REMEMBERED_MAX = 10_000


class Outcome(StrEnum):
    """What handling one cancel (message or backstop finding) came to."""

    STOPPED = "stopped"  # the run it targets was running here; it is stopped now
    BEFORE_START = "before_start"  # arrived while claiming: the loop never started
    DUPLICATE = "duplicate"  # its run is already stopped, or being stopped, here
    STALE = "stale"  # for an older run of a conversation that runs here now: not acted on
    NOT_OURS = "not_ours"  # no run of that conversation here: deleted as handled
    FORWARDED = "forwarded"  # a fallback cancel, sent on to the queue of the run's holder
    UNPARSABLE = "unparsable"  # not a cancel: set aside on the dead-letter queue


class WorkerClosed(RuntimeError):
    """The worker is shutting down: it starts no new loops."""


class ClaimRejected(Exception):
    """The conversation cannot be started or claimed in its current status."""

    def __init__(self, conversation_id: str, status: ConversationStatus | None) -> None:
        super().__init__(f"{conversation_id}: not possible in status {status}")
        self.conversation_id = conversation_id
        self.status = status


@dataclass(frozen=True)
class Stop:
    """A stop to carry out, as a cancel message or the backstop's read of the row tells it."""

    conversation_id: str
    run_id: str | None
    stop_id: str | None
    request_id: str | None
    requested_at: datetime | None
    via: RunEnd
    row_version: int | None = None

    @classmethod
    def parse(cls, body: str) -> Stop:
        """The stop a cancel message's body asks for; ``ValidationError`` if it is none."""
        message = CancelMessage.model_validate_json(body)
        return cls(
            message.sid,
            message.run_id,
            message.stop_id,
            message.request_id,
            message.requested_at,
            RunEnd.QUEUE,
            message.row_version,
        )


@dataclass(eq=False)
class Run:
    """One claim's run of a conversation's loop: a task of ours, or a loop its host runs."""

    conversation_id: str
    run_id: str
    claimed_at: datetime
    claimed_version: int | None = None  # the row's version our claim wrote
    task: asyncio.Task[object] | None = None
    halt: Halt | None = None
    ending: RunEnd | None = None  # set once, by whatever ends it first

    def targeted_by(self, stop: Stop) -> bool | None:
        """``True``/``False``, or ``None`` when only the row can tell (a cancel that names
        no run and no row version: schema 1, or a row other code wrote)."""
        if stop.run_id is not None:
            return stop.run_id == self.run_id
        if stop.row_version is not None and self.claimed_version is not None:
            # A stop of a row before our claim wrote it (a STARTING one: its stop made the
            # claim of that registration impossible) never targets this run. No clock of
            # two hosts is compared (tests/worker/test_runs.py).
            return stop.row_version >= self.claimed_version
        return None

    def ended_by(self, record: ConversationRecord | None) -> bool:
        """Whether the row says this run is over: gone, stopped, in a status none of ours
        (read as no record), started again since (only a stopped conversation can be), or
        another run's. What a run-less cancel and the backstop's strongly consistent read
        decide by (tests/worker/test_backstop.py)."""
        if record is None or record.status is not ConversationStatus.RUNNING:
            return True
        return record.run_id is not None and record.run_id != self.run_id


@dataclass
class _Claiming:
    run_id: str
    early_stop: Stop | None = None


@dataclass
class Runs:
    """Claims runs, and stops each one once: by a targeting cancel, the backstop, its host,
    its own end, or the worker's shutdown, whichever comes first (``Run.ending``)."""

    table: ClaimTable
    worker_id: str
    cleanup_timeout_seconds: float
    claim_attempts: int = 3
    closed: bool = False
    now: Callable[[], datetime] = utc_now  # the wall clock: stamps rows and logs, decides nothing
    _current: dict[str, Run] = field(default_factory=dict)
    _claiming: dict[str, _Claiming] = field(default_factory=dict)
    _ended: OrderedDict[str, RunEnd] = field(default_factory=OrderedDict)
    _handled_stops: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _stopping: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _bookkeeping: set[asyncio.Task[None]] = field(default_factory=set)
    # Claims whose every attempt failed ambiguously: released (conditional on their run)
    # by the backstop's next passes until that succeeds.
    unresolved: dict[str, str] = field(default_factory=dict)

    # -- what runs here ----------------------------------------------------------------

    @property
    def running(self) -> frozenset[str]:
        return frozenset(self._current)

    def current(self, conversation_id: str) -> Run | None:
        return self._current.get(conversation_id)

    def active(self) -> list[Run]:
        """Runs not already being ended: what the backstop re-reads."""
        return [run for run in self._current.values() if run.ending is None]

    # -- starting ----------------------------------------------------------------------

    async def register(self, conversation_id: str) -> None:
        """Make the conversation STARTING: a new one, or a stopped one started again.

        Raises ``ClaimRejected`` when it is RUNNING (stop it first) or in a status not ours.
        """
        result = await asyncio.to_thread(self.table.register, conversation_id, now=self.now())
        if not result.claimed:
            status = result.record.status if result.record else None
            log(logging.INFO, "register_rejected", conversation_id=conversation_id, status=status)
            raise ClaimRejected(conversation_id, status)
        log(logging.INFO, "conversation_registered", conversation_id=conversation_id)

    async def claim(
        self,
        conversation_id: str,
        *,
        worker_instance: str,
        cancel_queue_url: str,
        loop: AgentLoop | None = None,
        halt: Halt | None = None,
    ) -> Run:
        """Claim the conversation for a new run, then start ``loop`` (or adopt the host's).

        Raises ``ClaimRejected`` when the conversation is not STARTING, in particular when a
        stop landed first: the stop wins and the loop never starts.
        """
        if conversation_id in self._current or conversation_id in self._claiming:
            raise ValueError(f"{conversation_id} is already running here")
        pending = _Claiming(run_id=secrets.token_hex(8))
        claimed_at = self.now()
        self._claiming[conversation_id] = pending
        try:
            result = await self._claim_resolved(
                conversation_id,
                run_id=pending.run_id,
                worker_instance=worker_instance,
                cancel_queue_url=cancel_queue_url,
                now=claimed_at,
            )
        finally:
            del self._claiming[conversation_id]
        if not result.claimed:
            status = result.record.status if result.record else None
            log(logging.INFO, "claim_rejected", conversation_id=conversation_id, status=status)
            raise ClaimRejected(conversation_id, status)
        version = result.record.version if result.record else None
        run = Run(conversation_id, pending.run_id, claimed_at, version, halt=halt)
        if pending.early_stop is not None:
            # Its cancel was routed here by our claim and arrived before the loop existed.
            run.ending = RunEnd.BEFORE_START
            self._forget(run, pending.early_stop)
            self._log_stopped(run, pending.early_stop, Outcome.BEFORE_START, True)
            await self._record_end(run, RunEnd.BEFORE_START)
            raise ClaimRejected(conversation_id, ConversationStatus.STOPPED)
        if self.closed:
            # The worker closed while the claim was in flight: nothing would stop this loop.
            run.ending = RunEnd.WORKER_SHUTDOWN
            self._forget(run, None)
            await self._record_end(run, RunEnd.WORKER_SHUTDOWN)
            raise WorkerClosed("the worker closed while the claim was in flight")
        self._current[conversation_id] = run
        if loop is not None:
            run.task = asyncio.create_task(
                loop(conversation_id), name=f"agent-loop:{conversation_id}"
            )
            run.task.add_done_callback(lambda done: self._loop_ended(run, done))
        log(
            logging.INFO,
            "conversation_claimed",
            conversation_id=conversation_id,
            run_id=run.run_id,
            worker_id=self.worker_id,
            worker_instance=worker_instance,
            cancel_queue_url=cancel_queue_url,
        )
        return run

    async def _claim_resolved(
        self,
        conversation_id: str,
        *,
        run_id: str,
        worker_instance: str,
        cancel_queue_url: str,
        now: datetime,
    ) -> ClaimResult:
        """The claim, retried with the same run id while its outcome is unknown (a write
        may be applied while its answer is lost: the retry then finds our own run, which
        the claim's condition accepts). If every attempt fails, the run is released on the
        row, conditional on it, before the failure is raised: no row is left RUNNING for a
        loop that never started (tests/reliability/test_ambiguous_writes.py)."""
        failure: DependencyFailure | None = None
        for _ in range(self.claim_attempts):
            try:
                return await asyncio.to_thread(
                    self.table.claim,
                    conversation_id,
                    run_id=run_id,
                    worker_id=self.worker_id,
                    worker_instance=worker_instance,
                    cancel_queue_url=cancel_queue_url,
                    now=now,
                )
            except DependencyFailure as error:
                failure = error
        assert failure is not None
        self.unresolved[conversation_id] = run_id
        await self.resolve_unconfirmed()
        log(
            logging.WARNING,
            "claim_failed",
            conversation_id=conversation_id,
            run_id=run_id,
            error=str(failure),
            resolved=conversation_id not in self.unresolved,
        )
        raise failure

    async def resolve_unconfirmed(self) -> None:
        """Release, conditional on their run, the claims whose outcome was never known."""
        for conversation_id, run_id in list(self.unresolved.items()):
            try:
                await asyncio.to_thread(
                    self.table.record_run_ended,
                    conversation_id,
                    run_id,
                    via=RunEnd.BEFORE_START,
                    now=self.now(),
                )
            except DependencyFailure:
                continue
            del self.unresolved[conversation_id]

    # -- stopping ----------------------------------------------------------------------

    async def apply(self, stop: Stop) -> Outcome:
        """Carry out one stop if it targets a run here; idempotent, so duplicates, the
        backstop and the host's own close can race freely."""
        conversation_id = stop.conversation_id
        pending = self._claiming.get(conversation_id)
        if pending is not None and stop.run_id == pending.run_id:
            pending.early_stop = pending.early_stop or stop
            return Outcome.BEFORE_START
        run = self._current.get(conversation_id)
        targeted = run.targeted_by(stop) if run is not None else False
        if run is not None and targeted is None:
            targeted = await self._ended_by_row(run)
        if run is None or not targeted:
            return self._untargeted(stop, run)
        if run.ending is not None:
            if (in_progress := self._stopping.get(run.run_id)) is not None:
                await asyncio.shield(in_progress)
            return Outcome.DUPLICATE
        run.ending = stop.via
        stopping = asyncio.create_task(self._stop(run, stop))
        self._stopping[run.run_id] = stopping
        stopping.add_done_callback(lambda _: self._stopping.pop(run.run_id, None))
        await asyncio.shield(stopping)
        return Outcome.STOPPED

    def _untargeted(self, stop: Stop, run: Run | None) -> Outcome:
        """A stop for no run held here: an older run's, an ended one's, or another worker's."""
        if run is not None:
            return Outcome.STALE
        if stop.stop_id in self._handled_stops or (
            stop.run_id is not None and stop.run_id in self._ended
        ):
            return Outcome.DUPLICATE
        return Outcome.NOT_OURS

    async def _ended_by_row(self, run: Run) -> bool:
        """Only the row can tell whether a run-less cancel is for this run: read it."""
        records = await asyncio.to_thread(self.table.records, [run.conversation_id])
        return run.ended_by(records.get(run.conversation_id))

    async def _stop(self, run: Run, stop: Stop) -> None:
        cleanup_completed = await self._halt(run)
        self._forget(run, stop)
        self._log_stopped(run, stop, Outcome.STOPPED, cleanup_completed)
        await self._record_end(run, stop.via)

    async def release(self, conversation_id: str, via: RunEnd) -> bool:
        """The host ended the loop itself: record it (the row becomes STOPPED). ``False``
        when no run of it is here or one is already being ended (by a stop, say)."""
        run = self._current.get(conversation_id)
        if run is None or run.ending is not None:
            return False
        run.ending = via
        self._end_unstopped(run, via)
        await self._record_end(run, via)
        return True

    def _loop_ended(self, run: Run, task: asyncio.Task[object]) -> None:
        """A loop task of ours is done: if nothing of ours ended it, it ended by itself."""
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log(
                logging.ERROR,
                "agent_loop_failed",
                conversation_id=run.conversation_id,
                run_id=run.run_id,
                error=type(error).__name__,
            )
        if run.ending is not None:
            return
        # Cancelled, but not by us: its host did it.
        via = (
            RunEnd.HOST
            if task.cancelled()
            else RunEnd.FAILED
            if error is not None
            else RunEnd.FINISHED
        )
        run.ending = via
        self._end_unstopped(run, via)
        self._in_background(self._record_end(run, via))

    async def shutdown(self) -> int:
        """End every run still here (the worker is going away); how many there were."""
        self.closed = True
        left = await self.end_all(RunEnd.WORKER_SHUTDOWN)
        # Stops already under way finish too: their loop is stopped, and the row must say so.
        pending = {*self._bookkeeping, *self._stopping.values()}
        if pending:
            await asyncio.wait(pending, timeout=self.cleanup_timeout_seconds)
        return len(left)

    async def end_all(self, via: RunEnd) -> list[Run]:
        """Halt every run not already being ended, and record how (the worker shuts down,
        or learnt that peers judged it dead and released its runs)."""
        left = self.active()
        for run in left:
            run.ending = via
        await asyncio.gather(*(self._halt(run) for run in left))
        for run in left:
            self._end_unstopped(run, via)
        await asyncio.gather(*(self._record_end(run, via) for run in left))
        return left

    async def _halt(self, run: Run) -> bool:
        """Stop the loop and wait for its cleanup, at most the cleanup bound: did it finish?"""
        waiting: set[asyncio.Future[Any]]
        if run.task is not None:
            run.task.cancel()
            waiting = {run.task}
        elif run.halt is not None:
            waiting = {asyncio.ensure_future(run.halt())}
        else:
            return True
        done, _ = await asyncio.wait(waiting, timeout=self.cleanup_timeout_seconds)
        for future in done:
            if run.task is None and not future.cancelled() and future.exception() is not None:
                log(
                    logging.WARNING,
                    "halt_failed",
                    conversation_id=run.conversation_id,
                    run_id=run.run_id,
                    error=type(future.exception()).__name__,
                )
                return False
        return bool(done)

    def _end_unstopped(self, run: Run, via: RunEnd) -> None:
        """A run ended without a stop of its own (by itself, its host, the worker): forget
        it here, and log its one ``run_ended`` line."""
        self._forget(run, None)
        log(
            logging.INFO,
            "run_ended",
            conversation_id=run.conversation_id,
            run_id=run.run_id,
            via=via,
        )

    def _forget(self, run: Run, stop: Stop | None) -> None:
        if self._current.get(run.conversation_id) is run:
            del self._current[run.conversation_id]
        _remember(self._ended, run.run_id, run.ending or RunEnd.FINISHED)
        if stop is not None and stop.stop_id is not None:
            _remember(self._handled_stops, stop.stop_id, None)

    async def _record_end(self, run: Run, via: RunEnd) -> None:
        """Write on the row that this run's loop has ended, and how: the table alone then
        tells a stop carried out from one only recorded."""
        try:
            await asyncio.to_thread(
                self.table.record_run_ended,
                run.conversation_id,
                run.run_id,
                via=via,
                now=self.now(),
            )
        except Exception as error:
            log(
                logging.WARNING,
                "run_end_not_recorded",
                conversation_id=run.conversation_id,
                run_id=run.run_id,
                error=str(error) if isinstance(error, OSError) else type(error).__name__,
            )

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._bookkeeping.add(task)
        task.add_done_callback(self._bookkeeping.discard)

    def _log_stopped(self, run: Run, stop: Stop, outcome: Outcome, cleanup_completed: bool) -> None:
        """The one line per stop carried out, with the time from the request to the stop
        (two hosts' clocks: a figure for people, never a decision)."""
        stopped_at = self.now()
        latency_ms = (
            round((stopped_at - stop.requested_at).total_seconds() * 1000, 1)
            if stop.requested_at is not None
            else None
        )
        log(
            logging.INFO if cleanup_completed else logging.WARNING,
            "conversation_stopped",
            conversation_id=run.conversation_id,
            run_id=run.run_id,
            outcome=outcome.value,
            via=stop.via.value,
            stop_id=stop.stop_id,
            request_id=stop.request_id,
            requested_at=stop.requested_at,
            stopped_at=stopped_at,
            stop_to_stopped_ms=latency_ms,
            cleanup_completed=cleanup_completed,
        )


def _remember(memory: OrderedDict[str, Any], key: str, value: Any) -> None:
    memory[key] = value
    while len(memory) > _REMEMBERED_MAX:
        memory.popitem(last=False)
