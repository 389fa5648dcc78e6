"""The agent worker: claims runs, and stops each one when the stop that targets it arrives.

Two paths lead to a stop, and either is enough: the cancel message on this worker's own
queue (delivered within a long poll), and the backstop, which re-reads the rows of the runs
held here every few seconds, so a lost message delays a stop, never prevents it. All AWS
calls are blocking botocore calls: they run in threads, never on the event loop.

The pieces, each testable alone: ``runs`` (claims, and stopping a run once),
``polling`` (one queue), ``backstop`` (the table), ``own_queue`` (a fleet worker's queue).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from types import TracebackType

from openhands_stop.aws.cancel_inbox import SqsCancelInbox
from openhands_stop.aws.claims import DynamoClaimTable
from openhands_stop.aws.clients import dynamodb_client, long_poll_sqs_client
from openhands_stop.aws.worker_queues import WorkerQueues
from openhands_stop.domain.models import RunEnd, utc_now
from openhands_stop.domain.ports import CancelInbox, ClaimTable
from openhands_stop.worker.backstop import Backstop
from openhands_stop.worker.logs import log
from openhands_stop.worker.own_queue import OwnQueue
from openhands_stop.worker.polling import InboxPoller
from openhands_stop.worker.runs import (
    AgentLoop,
    ClaimRejected,
    Halt,
    Outcome,
    Run,
    Runs,
)
from openhands_stop.worker.settings import WorkerSettings

__all__ = ["AgentLoop", "ClaimRejected", "Halt", "Outcome", "Run", "Worker", "WorkerClosed"]


class WorkerClosed(RuntimeError):
    """The worker is shutting down: it starts no new loops."""


class Worker:
    """Registers and claims conversations, runs their loops, and stops them when told.

    Use it as ``async with Worker(settings) as worker:``, which (for a fleet) creates the
    worker's own queue, polls it, and runs the backstop in the background; then
    ``await worker.register(id)`` and ``await worker.start(id, loop)``.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        table: ClaimTable | None = None,
        inbox: CancelInbox | None = None,
    ) -> None:
        self.settings = settings
        self._table: ClaimTable = table or DynamoClaimTable(dynamodb_client(), settings.table_name)
        self._runs = Runs(self._table, settings.worker_id, settings.cleanup_timeout_seconds)
        self._closing = asyncio.Event()
        self._closing_flag = threading.Event()
        self._own_queue: OwnQueue | None = None
        shared: CancelInbox | None = None
        if settings.worker_queue_prefix:
            sqs = long_poll_sqs_client()
            own = SqsCancelInbox(sqs, "")
            self._own_queue = OwnQueue(
                WorkerQueues(sqs, settings.cancel_queue_url, settings.worker_queue_prefix),
                own,
                worker_id=settings.worker_id,
                heartbeat_seconds=settings.queue_heartbeat_seconds,
                orphan_seconds=settings.orphan_queue_seconds,
                closing=self._closing,
            )
            # The stack's queue gets the cancels of runs whose queue is unknown or gone: drained
            # by every worker, acted on by the one holding the run it names.
            shared = SqsCancelInbox(sqs, settings.cancel_queue_url)
            inbox = own
        self._inbox: CancelInbox = inbox or SqsCancelInbox(
            long_poll_sqs_client(), settings.cancel_queue_url
        )
        self._pollers = [self._poller(self._inbox)]
        if shared is not None:
            self._pollers.append(self._poller(shared))
        self._backstop = Backstop(
            self._table,
            self._runs,
            interval_seconds=settings.backstop_seconds,
            grace_seconds=settings.backstop_grace_seconds,
            closing=self._closing,
        )
        self._serving: asyncio.Task[None] | None = None

    def _poller(self, inbox: CancelInbox) -> InboxPoller:
        return InboxPoller(
            inbox,
            self._runs,
            closing=self._closing,
            closing_flag=self._closing_flag,
            wait_time_seconds=self.settings.wait_time_seconds,
            shutdown_grace_seconds=self.settings.shutdown_grace_seconds,
        )

    # -- what runs here ----------------------------------------------------------------

    @property
    def running(self) -> frozenset[str]:
        """The conversations whose loops this worker runs now."""
        return self._runs.running

    def run_id(self, conversation_id: str) -> str | None:
        """The id of the conversation's run held here, if any."""
        run = self._runs.current(conversation_id)
        return run.run_id if run is not None else None

    @property
    def cancel_queue_url(self) -> str:
        """The queue this worker reads and its claims record (a fleet's: after ``open``)."""
        if not self._inbox.queue_url:
            raise RuntimeError("the worker's own queue is made by open() (or `async with`)")
        return self._inbox.queue_url

    # -- the start side ----------------------------------------------------------------

    async def open(self) -> None:
        """For a fleet, create this worker's own queue (once); nothing otherwise."""
        if self._own_queue is not None:
            await self._own_queue.open()

    async def register(self, conversation_id: str) -> None:
        """Make the conversation STARTING: a new one, or a stopped one started again.

        Raises ``ClaimRejected`` when it is RUNNING (stop it first) or in a status not ours.
        """
        result = await asyncio.to_thread(self._table.register, conversation_id, now=utc_now())
        if not result.claimed:
            status = result.record.status if result.record else None
            log(logging.INFO, "register_rejected", conversation_id=conversation_id, status=status)
            raise ClaimRejected(conversation_id, status)
        log(logging.INFO, "conversation_registered", conversation_id=conversation_id)

    async def start(self, conversation_id: str, agent_loop: AgentLoop) -> asyncio.Task[object]:
        """Claim the conversation (STARTING to RUNNING, a new run), then run its loop as a task.

        Raises ``ClaimRejected`` when the conversation is not STARTING, in particular when a
        stop landed first: the stop wins and the loop never starts.
        """
        run = await self._claim(conversation_id, loop=agent_loop)
        assert run.task is not None
        return run.task

    async def adopt(self, conversation_id: str, stop: Halt) -> Run:
        """Claim the conversation for a loop its host runs itself: a stop for this run awaits
        ``stop()`` (an OpenHands ``close_session``, say). The host calls ``release`` when it
        ends the loop on its own."""
        return await self._claim(conversation_id, halt=stop)

    async def release(self, conversation_id: str, via: RunEnd = RunEnd.HOST) -> bool:
        """The host ended the conversation's loop itself: the row becomes STOPPED."""
        return await self._runs.release(conversation_id, via)

    async def _claim(
        self, conversation_id: str, *, loop: AgentLoop | None = None, halt: Halt | None = None
    ) -> Run:
        if self._closing.is_set():
            raise WorkerClosed("the worker is shutting down")
        await self.open()
        return await self._runs.claim(
            conversation_id, cancel_queue_url=self.cancel_queue_url, loop=loop, halt=halt
        )

    # -- one step at a time (tests, and hosts that drive the worker themselves) --------

    async def poll_once(self, wait_seconds: int | None = None) -> list[Outcome]:
        """Receive once from this worker's own queue and handle what arrived."""
        return await self._pollers[0].poll_once(wait_seconds)

    async def poll_shared_once(self, wait_seconds: int | None = None) -> list[Outcome]:
        """Receive once from the stack's queue (a fleet worker drains it too)."""
        if len(self._pollers) < 2:
            raise RuntimeError("only a fleet worker (WORKER_QUEUE_PREFIX) drains the stack queue")
        return await self._pollers[1].poll_once(wait_seconds)

    async def backstop_once(self) -> list[Outcome]:
        """Read the rows of the runs held here; stop those the row says are over."""
        return await self._backstop.once()

    # -- lifecycle ---------------------------------------------------------------------

    async def serve(self) -> None:
        """Poll the queues, run the backstop and the queue heartbeat, until ``shutdown()``."""
        await self.open()
        background: list[asyncio.Task[None]] = []
        if self.settings.backstop_seconds > 0:
            background.append(asyncio.create_task(self._backstop.serve()))
        if self._own_queue is not None:
            background.append(asyncio.create_task(self._own_queue.serve()))
        log(
            logging.INFO,
            "worker_started",
            worker_id=self.settings.worker_id,
            cancel_queue_url=self.cancel_queue_url,
            shared_queue_url=self.settings.cancel_queue_url if self._own_queue else None,
            backstop_seconds=self.settings.backstop_seconds,
        )
        try:
            await asyncio.gather(*(poller.serve() for poller in self._pollers))
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)

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
        """Shut down: stop polling, finish or hand back cancels, end the runs left, delete
        the worker's own queue.

        Runs still held are cancelled with the same cleanup bound, and their rows become
        STOPPED (``loop_stopped_via: worker_shutdown``): the table never says RUNNING for a
        loop that is gone, and the host can start the conversation again elsewhere.
        """
        self.shutdown()
        if self._serving is not None:
            await asyncio.gather(self._serving, return_exceptions=True)
        left = await self._runs.shutdown()
        if self._own_queue is not None:
            await self._own_queue.close()
        log(logging.INFO, "worker_stopped", worker_id=self.settings.worker_id, loops_left=left)

    async def __aenter__(self) -> Worker:
        await self.open()
        self._serving = asyncio.create_task(self.serve(), name="cancel-queue-poller")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
