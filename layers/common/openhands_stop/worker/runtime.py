"""Runs agent loops as asyncio tasks and stops each one when its stop arrives.

Two paths lead to a stop, and either is enough: the cancel message on this worker's queue
(delivered within a long poll, so in well under a second), and the backstop, which re-reads
the statuses of the loops it runs every few seconds, so a lost message delays a stop, never
prevents it. All AWS calls are blocking botocore calls: they run in threads, never on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, TypeVar

from pydantic import ValidationError

from openhands_stop.aws.cancel_inbox import ReceivedMessage, SqsCancelInbox
from openhands_stop.aws.claims import DynamoClaimTable
from openhands_stop.aws.clients import dynamodb_client, long_poll_sqs_client
from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.domain.models import (
    CancelMessage,
    ConversationRecord,
    ConversationStatus,
    utc_now,
)
from openhands_stop.worker.logs import log
from openhands_stop.worker.settings import WorkerSettings

AgentLoop = Callable[[str], Coroutine[Any, Any, object]]
"""An agent loop: called with the conversation id, runs until done or cancelled."""

T = TypeVar("T")

_RECENTLY_STOPPED_MAX = 10_000
_POLL_BACKOFF_MAX_SECONDS = 20.0


class Outcome(StrEnum):
    """What handling one cancel (message or backstop finding) came to."""

    STOPPED = "stopped"  # a loop of ours was running; it is stopped now
    STOPPED_BEFORE_START = "stopped_before_start"  # arrived while claiming: never started
    DUPLICATE = "duplicate"  # already stopped, or being stopped, by an earlier cancel
    NOT_OURS = "not_ours"  # no loop of ours: deleted as handled
    UNPARSABLE = "unparsable"  # left on the queue for its redrive to the dead-letter queue
    HANDED_BACK = "handed_back"  # received while shutting down: visible again at once


class WorkerClosed(RuntimeError):
    """The worker is shutting down: it starts no new loops."""


class ClaimRejected(Exception):
    """The conversation is not STARTING (stopped first, claimed elsewhere, or unknown)."""

    def __init__(self, conversation_id: str, status: ConversationStatus | None) -> None:
        super().__init__(f"{conversation_id}: cannot claim a conversation in status {status}")
        self.conversation_id = conversation_id
        self.status = status


@dataclass(frozen=True)
class _Stop:
    """The stop being carried out, as the cancel message or the record tells it."""

    conversation_id: str
    stop_id: str | None
    request_id: str | None
    requested_at: datetime | None
    via: str

    @classmethod
    def from_message(cls, message: CancelMessage) -> _Stop:
        return cls(message.sid, message.stop_id, message.request_id, message.requested_at, "queue")

    @classmethod
    def from_record(cls, record: ConversationRecord) -> _Stop:
        return cls(
            record.conversation_id,
            record.stop_id,
            record.stop_request_id,
            record.stopped_at,
            "backstop",
        )


class Worker:
    """Claims conversations, runs their loops, and stops them when told.

    Use it as ``async with Worker(settings) as worker:``, which polls the cancel queue (and
    runs the backstop) in the background; ``await worker.start(id, loop)`` claims and runs one.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        table: DynamoClaimTable | None = None,
        inbox: SqsCancelInbox | None = None,
    ) -> None:
        self.settings = settings
        self._table = table or DynamoClaimTable(dynamodb_client(), settings.table_name)
        self._inbox = inbox or SqsCancelInbox(long_poll_sqs_client(), settings.cancel_queue_url)
        self._loops: dict[str, asyncio.Task[object]] = {}
        self._claiming: set[str] = set()
        self._stopped_while_claiming: dict[str, _Stop] = {}
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._recently_stopped: OrderedDict[str, None] = OrderedDict()
        self._handlers: set[asyncio.Task[Outcome]] = set()
        self._closing = asyncio.Event()
        self._closing_flag = threading.Event()  # the same, for the polling thread
        self._serving: asyncio.Task[None] | None = None

    # -- running loops -------------------------------------------------------------------

    @property
    def running(self) -> frozenset[str]:
        """The conversations whose loops this worker runs now."""
        return frozenset(self._loops)

    async def start(self, conversation_id: str, agent_loop: AgentLoop) -> asyncio.Task[object]:
        """Claim the conversation (STARTING to RUNNING), then run its loop as a task.

        Raises ``ClaimRejected`` when the conversation is not STARTING, in particular when a
        stop landed first: the stop wins and the loop never starts.
        """
        if self._closing.is_set():
            raise WorkerClosed("the worker is shutting down")
        if conversation_id in self._loops or conversation_id in self._claiming:
            raise ValueError(f"{conversation_id} is already running here")
        self._claiming.add(conversation_id)
        try:
            result = await asyncio.to_thread(
                self._table.claim,
                conversation_id,
                worker_id=self.settings.worker_id,
                cancel_queue_url=self.settings.cancel_queue_url,
                now=utc_now(),
            )
        finally:
            self._claiming.discard(conversation_id)
            early_stop = self._stopped_while_claiming.pop(conversation_id, None)
        if not result.claimed:
            status = result.record.status if result.record else None
            log(logging.INFO, "claim_rejected", conversation_id=conversation_id, status=status)
            raise ClaimRejected(conversation_id, status)
        if early_stop is not None:
            # Its cancel was routed here by our claim and arrived before the loop existed.
            self._remember_stopped(conversation_id)
            self._log_stopped(early_stop, Outcome.STOPPED_BEFORE_START, cleanup_completed=True)
            raise ClaimRejected(conversation_id, ConversationStatus.STOPPED)
        task: asyncio.Task[object] = asyncio.create_task(
            agent_loop(conversation_id), name=f"agent-loop:{conversation_id}"
        )
        self._loops[conversation_id] = task
        task.add_done_callback(lambda done: self._loop_ended(conversation_id, done))
        log(
            logging.INFO,
            "conversation_claimed",
            conversation_id=conversation_id,
            worker_id=self.settings.worker_id,
            cancel_queue_url=self.settings.cancel_queue_url,
        )
        return task

    def _loop_ended(self, conversation_id: str, task: asyncio.Task[object]) -> None:
        if self._loops.get(conversation_id) is task:
            del self._loops[conversation_id]
        if not task.cancelled() and (error := task.exception()) is not None:
            log(
                logging.ERROR,
                "agent_loop_failed",
                conversation_id=conversation_id,
                error=type(error).__name__,
            )

    # -- stopping ------------------------------------------------------------------------

    async def _apply(self, stop: _Stop) -> Outcome:
        """Carry out one stop; idempotent, so duplicates and the backstop can race freely."""
        conversation_id = stop.conversation_id
        if conversation_id in self._recently_stopped:
            return Outcome.DUPLICATE
        if (in_progress := self._stopping.get(conversation_id)) is not None:
            await asyncio.shield(in_progress)
            return Outcome.DUPLICATE
        if conversation_id in self._claiming:
            self._stopped_while_claiming.setdefault(conversation_id, stop)
            return Outcome.STOPPED_BEFORE_START
        task = self._loops.get(conversation_id)
        if task is None:
            return Outcome.NOT_OURS
        stopping = asyncio.create_task(self._stop_loop(stop, task))
        self._stopping[conversation_id] = stopping
        stopping.add_done_callback(lambda _: self._stopping.pop(conversation_id, None))
        await asyncio.shield(stopping)
        return Outcome.STOPPED

    async def _stop_loop(self, stop: _Stop, task: asyncio.Task[object]) -> None:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=self.settings.cleanup_timeout_seconds)
        self._remember_stopped(stop.conversation_id)
        self._log_stopped(stop, Outcome.STOPPED, cleanup_completed=bool(done))

    def _remember_stopped(self, conversation_id: str) -> None:
        self._recently_stopped[conversation_id] = None
        while len(self._recently_stopped) > _RECENTLY_STOPPED_MAX:
            self._recently_stopped.popitem(last=False)

    def _log_stopped(self, stop: _Stop, outcome: Outcome, *, cleanup_completed: bool) -> None:
        """The one line per cancel, with the time from the stop request to the loop stopped."""
        stopped_at = utc_now()
        latency_ms = (
            round((stopped_at - stop.requested_at).total_seconds() * 1000, 1)
            if stop.requested_at is not None
            else None
        )
        log(
            logging.INFO if cleanup_completed else logging.WARNING,
            "conversation_stopped",
            conversation_id=stop.conversation_id,
            outcome=outcome.value,
            via=stop.via,
            stop_id=stop.stop_id,
            request_id=stop.request_id,
            requested_at=stop.requested_at,
            stopped_at=stopped_at,
            stop_to_stopped_ms=latency_ms,
            cleanup_completed=cleanup_completed,
        )

    # -- the cancel queue ----------------------------------------------------------------

    async def poll_once(self, wait_seconds: int | None = None) -> list[Outcome]:
        """Receive once and handle every message received; what the serving loop repeats."""
        wait = self.settings.wait_time_seconds if wait_seconds is None else wait_seconds
        messages = await asyncio.to_thread(self._inbox.receive, wait)
        return list(await asyncio.gather(*(self._handle(message) for message in messages)))

    async def _handle(self, message: ReceivedMessage) -> Outcome:
        try:
            cancel = CancelMessage.model_validate_json(message.body)
        except ValidationError as error:
            # Not deleted: it comes back after the visibility timeout, and after the queue's
            # maxReceiveCount its redrive moves it to the dead-letter queue for a human.
            log(
                logging.WARNING,
                "cancel_unparsable",
                message_id=message.message_id,
                body_bytes=len(message.body.encode()),
                errors=error.error_count(),
            )
            return Outcome.UNPARSABLE
        outcome = await self._apply(_Stop.from_message(cancel))
        if outcome is not Outcome.STOPPED:
            log(
                logging.INFO,
                "cancel_handled",
                conversation_id=cancel.sid,
                stop_id=cancel.stop_id,
                outcome=outcome.value,
            )
        try:
            await asyncio.to_thread(self._inbox.delete, message)
        except DependencyFailure as failure:
            # It will be delivered again, and then handled as a duplicate.
            log(
                logging.WARNING,
                "cancel_delete_failed",
                message_id=message.message_id,
                error=str(failure),
            )
        return outcome

    def _dispatch(self, messages: list[ReceivedMessage]) -> None:
        """Handle each message in its own task: one slow cleanup delays no other stop."""
        for message in messages:
            handler = asyncio.create_task(self._handle(message))
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)

    async def _hand_back(self, messages: list[ReceivedMessage]) -> None:
        for message in messages:
            with contextlib.suppress(DependencyFailure):
                await asyncio.to_thread(self._inbox.hand_back, message)
        if messages:
            log(logging.INFO, "cancels_handed_back", count=len(messages))

    def _receive_unless_closing(self, wait: int) -> list[ReceivedMessage]:
        """In the polling thread: a poll that returns after shutdown hands its catch back."""
        messages = self._inbox.receive(wait)
        if self._closing_flag.is_set() and messages:
            for message in messages:
                with contextlib.suppress(DependencyFailure):
                    self._inbox.hand_back(message)
            log(logging.INFO, "cancels_handed_back", count=len(messages))
            return []
        return messages

    async def _poll_forever(self) -> None:
        closing = asyncio.create_task(self._closing.wait())
        backoff = 0.0
        try:
            while not self._closing.is_set():
                receiving = _in_daemon_thread(
                    lambda: self._receive_unless_closing(self.settings.wait_time_seconds)
                )
                either: set[asyncio.Future[Any]] = {receiving, closing}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    # Shutting down mid-poll: give the poll its grace; what it receives is
                    # handed back by its thread. Past the grace it is abandoned, and anything
                    # it took reappears after the queue's visibility timeout.
                    await asyncio.wait({receiving}, timeout=self.settings.shutdown_grace_seconds)
                    return
                try:
                    messages = receiving.result()
                except DependencyFailure as failure:
                    backoff = min(max(backoff * 2, 0.5), _POLL_BACKOFF_MAX_SECONDS)
                    log(
                        logging.WARNING,
                        "cancel_poll_failed",
                        error=str(failure),
                        retry_in_seconds=backoff,
                    )
                    await asyncio.wait({closing}, timeout=backoff)
                    continue
                backoff = 0.0
                if self._closing.is_set():
                    await self._hand_back(messages)
                    return
                self._dispatch(messages)
        finally:
            closing.cancel()

    # -- the backstop --------------------------------------------------------------------

    async def backstop_once(self) -> list[Outcome]:
        """Read the statuses of the loops running here; stop those recorded as STOPPED."""
        candidates = [
            conversation_id
            for conversation_id in self._loops
            if conversation_id not in self._stopping
            and conversation_id not in self._recently_stopped
        ]
        if not candidates:
            return []
        records = await asyncio.to_thread(self._table.records, candidates)
        stopped = [
            record for record in records.values() if record.status is ConversationStatus.STOPPED
        ]
        return list(await asyncio.gather(*(self._apply(_Stop.from_record(r)) for r in stopped)))

    async def _backstop_forever(self) -> None:
        interval = self.settings.backstop_seconds
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=interval)
                return
            try:
                await self.backstop_once()
            except DependencyFailure as failure:
                log(logging.WARNING, "backstop_failed", error=str(failure))

    # -- lifecycle -----------------------------------------------------------------------

    async def serve(self) -> None:
        """Poll the cancel queue (and run the backstop) until ``shutdown()``."""
        backstop = (
            asyncio.create_task(self._backstop_forever())
            if self.settings.backstop_seconds > 0
            else None
        )
        log(
            logging.INFO,
            "worker_started",
            worker_id=self.settings.worker_id,
            cancel_queue_url=self.settings.cancel_queue_url,
            backstop_seconds=self.settings.backstop_seconds,
        )
        try:
            await self._poll_forever()
        finally:
            if backstop is not None:
                backstop.cancel()
                await asyncio.gather(backstop, return_exceptions=True)
            if self._handlers:
                # Stops already received are carried out (their messages deleted) first.
                await asyncio.wait(
                    set(self._handlers), timeout=self.settings.shutdown_grace_seconds
                )

    def shutdown(self) -> None:
        """Stop polling; safe to call from a signal handler, and more than once."""
        self._closing.set()
        self._closing_flag.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM (and SIGINT) start a clean shutdown instead of killing the process."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.shutdown)

    async def wait_closed(self) -> None:
        """Until the serving loop has ended (after ``shutdown()``)."""
        if self._serving is not None:
            await asyncio.shield(self._serving)

    async def aclose(self) -> None:
        """Shut down: stop polling, finish or hand back cancels, then cancel loops left.

        Loops still running when the worker closes are cancelled with the same cleanup bound;
        their records stay RUNNING (the conversation was not stopped, its host went away).
        """
        self.shutdown()
        if self._serving is not None:
            await asyncio.gather(self._serving, return_exceptions=True)
        left = list(self._loops.values())
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left, timeout=self.settings.cleanup_timeout_seconds)
        log(logging.INFO, "worker_stopped", worker_id=self.settings.worker_id, loops_left=len(left))

    async def __aenter__(self) -> Worker:
        self._serving = asyncio.create_task(self.serve(), name="cancel-queue-poller")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def _in_daemon_thread(call: Callable[[], T]) -> asyncio.Future[T]:
    """Run a blocking call in a daemon thread: unlike ``to_thread``, a long poll still in
    flight cannot hold the process at exit once the shutdown grace is over."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = call()
        except BaseException as raised:  # handed to the awaiting side
            error = raised
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="cancel-queue-poll", daemon=True).start()
    return future
