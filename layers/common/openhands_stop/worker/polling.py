"""Polling one cancel queue: each message handled in its own task, deleted once handled.

A message that is not a cancel is set aside at once (a copy on the dead-letter queue, then
deleted) rather than left to hold back its FIFO group until its redrive. A cancel for no
run held here may be for a run another worker holds (a fallback to the stack queue):
``route`` sends it on to that worker's queue before it is deleted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import ValidationError

from openhands_stop.aws.failures import is_missing_queue
from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.domain.ports import CancelInbox, ReceivedMessage
from openhands_stop.worker.logs import log
from openhands_stop.worker.runs import Outcome, Runs, Stop
from openhands_stop.worker.shutdown import Shutdown

T = TypeVar("T")

Route = Callable[[Stop, str], Awaitable[bool]]
"""Send a cancel (its body as received) on to the worker holding its run: did it?"""

_POLL_BACKOFF_MAX_SECONDS = 20.0


class InboxPoller:
    """Long-polls one inbox until the worker closes; hands back what arrives after that."""

    def __init__(
        self,
        inbox: CancelInbox,
        runs: Runs,
        *,
        shutdown: Shutdown,
        wait_time_seconds: int,
        shutdown_grace_seconds: float,
        set_aside: Callable[[ReceivedMessage], None] | None = None,
        route: Route | None = None,
        queue_missing: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.inbox = inbox
        self._runs = runs
        self._set_aside = set_aside
        self._route = route
        self._queue_missing = queue_missing
        self._shutdown = shutdown
        self._wait_time_seconds = wait_time_seconds
        self._shutdown_grace_seconds = shutdown_grace_seconds
        self._handlers: set[asyncio.Task[Outcome]] = set()

    async def poll_once(self, wait_seconds: int | None = None) -> list[Outcome]:
        """Receive once and handle every message received; what ``serve`` repeats."""
        wait = self._wait_time_seconds if wait_seconds is None else wait_seconds
        polled = self.inbox.queue_url
        try:
            messages = await asyncio.to_thread(self._receive_unless_shut_down, wait)
        except DependencyFailure as failure:
            if not await self._made_again(failure, polled):
                raise
            return []
        return list(await asyncio.gather(*(self.handle(message) for message in messages)))

    async def _made_again(self, failure: DependencyFailure, polled: str) -> bool:
        """Whether ``failure`` was this worker's own queue gone, now made again (liveness
        makes a new queue, under a new instance); a failure to make it is raised."""
        if not (is_missing_queue(failure) and self._queue_missing is not None):
            return False
        log(logging.WARNING, "own_queue_missing", queue_url=polled)
        await self._queue_missing(polled)
        return True

    async def handle(self, message: ReceivedMessage) -> Outcome:
        try:
            stop = Stop.parse(message.body)
        except ValidationError as error:
            log(
                logging.WARNING,
                "cancel_unparsable",
                message_id=message.message_id,
                body_bytes=len(message.body.encode()),
                errors=error.error_count(),
                set_aside=self._set_aside is not None,
            )
            if self._set_aside is not None:
                # A copy for a human on the dead-letter queue, then deleted here: its FIFO
                # group (perhaps a real cancel's) is not held back until a redrive. Without a
                # dead-letter queue it stays, for the queue's own redrive.
                try:
                    await asyncio.to_thread(self._set_aside, message)
                    await asyncio.to_thread(self.inbox.delete, message)
                except DependencyFailure as failure:
                    log(logging.WARNING, "cancel_set_aside_failed", error=str(failure))
            return Outcome.UNPARSABLE
        outcome = await self._runs.apply(stop)
        if outcome is Outcome.NOT_OURS and self._route is not None:
            try:
                if await self._route(stop, message.body):
                    outcome = Outcome.FORWARDED
            except DependencyFailure as failure:
                # Not deleted: it comes back after the visibility timeout, and is routed then.
                log(
                    logging.WARNING,
                    "cancel_route_failed",
                    stop_id=stop.stop_id,
                    error=str(failure),
                )
                return outcome
        if outcome is not Outcome.STOPPED:
            log(
                logging.INFO,
                "cancel_handled",
                conversation_id=stop.conversation_id,
                run_id=stop.run_id,
                stop_id=stop.stop_id,
                outcome=outcome.value,
            )
        try:
            await asyncio.to_thread(self.inbox.delete, message)
        except DependencyFailure as failure:
            # It will be delivered again, and then handled as a duplicate.
            log(
                logging.WARNING,
                "cancel_delete_failed",
                message_id=message.message_id,
                error=str(failure),
            )
        return outcome

    def _receive_unless_shut_down(self, wait: int) -> list[ReceivedMessage]:
        """In the polling thread: a poll that returns after shutdown hands its catch back."""
        messages = self.inbox.receive(wait)
        if self._shutdown.requested and messages:
            for message in messages:
                with contextlib.suppress(DependencyFailure):
                    self.inbox.hand_back(message)
            log(logging.INFO, "cancels_handed_back", count=len(messages))
            return []
        return messages

    async def serve(self) -> None:
        """Poll until the worker closes, then let the stops already received finish."""
        try:
            await self._poll_forever()
        finally:
            if self._handlers:
                # Stops already received are carried out (their messages deleted) first.
                await asyncio.wait(set(self._handlers), timeout=self._shutdown_grace_seconds)

    async def _poll_forever(self) -> None:
        closing = asyncio.create_task(self._shutdown.wait())
        backoff = 0.0
        try:
            while not self._shutdown.requested:
                polled = self.inbox.queue_url  # the queue found missing, if it is
                receiving = _in_daemon_thread(
                    lambda: self._receive_unless_shut_down(self._wait_time_seconds)
                )
                either: set[asyncio.Future[Any]] = {receiving, closing}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    # Shutting down mid-poll: the poll is left to its daemon thread, which
                    # hands back whatever it receives while the process lives; anything it
                    # took as the process exits reappears after the visibility timeout. So
                    # leaving costs the stops in flight, never a long poll's wait. What it
                    # ends with (a queue deleted at shutdown, say) is nobody's to handle.
                    receiving.add_done_callback(_ignore_outcome)
                    return
                try:
                    messages = receiving.result()
                except DependencyFailure as failure:
                    with contextlib.suppress(DependencyFailure):
                        if await self._made_again(failure, polled):
                            continue
                    backoff = min(max(backoff * 2, 0.5), _POLL_BACKOFF_MAX_SECONDS)
                    log(
                        logging.WARNING,
                        "cancel_poll_failed",
                        queue_url=self.inbox.queue_url,
                        error=str(failure),
                        retry_in_seconds=backoff,
                    )
                    await asyncio.wait({closing}, timeout=backoff)
                    continue
                backoff = 0.0
                if self._shutdown.requested:
                    await self._hand_back(messages)
                    return
                self._dispatch(messages)
        finally:
            closing.cancel()

    def _dispatch(self, messages: list[ReceivedMessage]) -> None:
        """Handle each message in its own task: one slow cleanup delays no other stop."""
        for message in messages:
            handler = asyncio.create_task(self.handle(message))
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)

    async def _hand_back(self, messages: list[ReceivedMessage]) -> None:
        for message in messages:
            with contextlib.suppress(DependencyFailure):
                await asyncio.to_thread(self.inbox.hand_back, message)
        if messages:
            log(logging.INFO, "cancels_handed_back", count=len(messages))


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned future's outcome, so the loop never reports it as unhandled."""
    if not future.cancelled():
        future.exception()


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
