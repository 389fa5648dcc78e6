"""Polling one cancel queue: each message handled in its own task, deleted once handled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import ValidationError

from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.domain.models import CancelMessage
from openhands_stop.domain.ports import CancelInbox, ReceivedMessage
from openhands_stop.worker.logs import log
from openhands_stop.worker.runs import Outcome, Runs, Stop

T = TypeVar("T")

_POLL_BACKOFF_MAX_SECONDS = 20.0


class InboxPoller:
    """Long-polls one inbox until the worker closes; hands back what arrives after that."""

    def __init__(
        self,
        inbox: CancelInbox,
        runs: Runs,
        *,
        closing: asyncio.Event,
        closing_flag: threading.Event,
        wait_time_seconds: int,
        shutdown_grace_seconds: float,
    ) -> None:
        self.inbox = inbox
        self._runs = runs
        self._closing = closing
        self._closing_flag = closing_flag  # the same as ``closing``, for the polling thread
        self._wait_time_seconds = wait_time_seconds
        self._shutdown_grace_seconds = shutdown_grace_seconds
        self._handlers: set[asyncio.Task[Outcome]] = set()

    async def poll_once(self, wait_seconds: int | None = None) -> list[Outcome]:
        """Receive once and handle every message received; what ``serve`` repeats."""
        wait = self._wait_time_seconds if wait_seconds is None else wait_seconds
        messages = await asyncio.to_thread(self.inbox.receive, wait)
        return list(await asyncio.gather(*(self.handle(message) for message in messages)))

    async def handle(self, message: ReceivedMessage) -> Outcome:
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
        outcome = await self._runs.apply(Stop.from_message(cancel))
        if outcome is not Outcome.STOPPED:
            log(
                logging.INFO,
                "cancel_handled",
                conversation_id=cancel.sid,
                run_id=cancel.run_id,
                stop_id=cancel.stop_id,
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

    def receive_unless_closing(self, wait: int) -> list[ReceivedMessage]:
        """In the polling thread: a poll that returns after shutdown hands its catch back."""
        messages = self.inbox.receive(wait)
        if self._closing_flag.is_set() and messages:
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
        closing = asyncio.create_task(self._closing.wait())
        backoff = 0.0
        try:
            while not self._closing.is_set():
                receiving = _in_daemon_thread(
                    lambda: self.receive_unless_closing(self._wait_time_seconds)
                )
                either: set[asyncio.Future[Any]] = {receiving, closing}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    # Shutting down mid-poll: give the poll its grace; what it receives is
                    # handed back by its thread. Past the grace it is abandoned, and anything
                    # it took reappears after the queue's visibility timeout.
                    await asyncio.wait({receiving}, timeout=self._shutdown_grace_seconds)
                    return
                try:
                    messages = receiving.result()
                except DependencyFailure as failure:
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
                if self._closing.is_set():
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
