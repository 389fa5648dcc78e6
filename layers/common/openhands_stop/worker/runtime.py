"""The agent worker: claims runs, and stops each one when the stop that targets it arrives.

Two paths lead to a stop, and either is enough: the cancel message on this worker's own
queue (delivered within a long poll), and the backstop, which finds the runs held here whose
rows say they are over, so a lost message delays a stop, never prevents it. Liveness makes
the third promise: a worker that dies has its runs released by a peer. All AWS calls are
blocking botocore calls: they run in threads, never on the event loop.

The pieces, each testable alone: ``runs`` (claims, and stopping a run once), ``polling``
(one queue), ``backstop`` (the table), ``liveness`` (the worker's instance, queue and
proof of life, and its judging of peers), ``routing`` (fallback cancels to their holder).
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
from openhands_stop.aws.failures import dependency_call
from openhands_stop.aws.worker_queues import WorkerQueues, dead_letter_url
from openhands_stop.aws.worker_roster import DynamoWorkerRoster
from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.domain.models import RunEnd
from openhands_stop.domain.ports import CancelInbox, ClaimTable, ReceivedMessage
from openhands_stop.worker.backstop import Backstop
from openhands_stop.worker.clock import Clock
from openhands_stop.worker.liveness import Liveness
from openhands_stop.worker.logs import log
from openhands_stop.worker.polling import InboxPoller, Route
from openhands_stop.worker.routing import FallbackRouter
from openhands_stop.worker.runs import (
    AgentLoop,
    ClaimRejected,
    Halt,
    Outcome,
    Run,
    Runs,
    WorkerClosed,
)
from openhands_stop.worker.settings import WorkerSettings

__all__ = ["AgentLoop", "ClaimRejected", "Halt", "Outcome", "Run", "Worker", "WorkerClosed"]


class Worker:
    """Registers and claims conversations, runs their loops, and stops them when told.

    Use it as ``async with Worker(settings) as worker:``, which joins the fleet's roster,
    creates the worker's own queue (with ``WORKER_QUEUE_PREFIX``), polls, runs the backstop
    and the liveness beat in the background; then ``await worker.register(id)`` and
    ``await worker.start(id, loop)``.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        table: ClaimTable | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        clock = clock or Clock()
        dynamodb = dynamodb_client()
        sqs = long_poll_sqs_client()
        self._sqs = sqs
        self._table: ClaimTable = table or DynamoClaimTable(dynamodb, settings.table_name)
        self._runs = Runs(
            self._table, settings.worker_id, settings.cleanup_timeout_seconds, now=clock.wall
        )
        self._closing = asyncio.Event()
        self._closing_flag = threading.Event()
        roster = DynamoWorkerRoster(dynamodb, settings.table_name)
        queues = (
            WorkerQueues(sqs, settings.stack_queue_url, settings.worker_queue_prefix)
            if settings.worker_queue_prefix
            else None
        )
        stack_inbox = SqsCancelInbox(sqs, settings.stack_queue_url)
        own_inbox = SqsCancelInbox(sqs, "") if queues is not None else None
        self._liveness = Liveness(
            roster,
            self._table,
            self._runs,
            queues=queues,
            inbox=own_inbox,
            stack_queue_url=settings.stack_queue_url,
            worker_id=settings.worker_id,
            heartbeat_seconds=settings.queue_heartbeat_seconds,
            orphan_seconds=settings.orphan_queue_seconds,
            closing=self._closing,
            clock=clock,
        )
        self._dead_letter_url: str | None = None
        route: Route | None = None
        if queues is not None:
            route = FallbackRouter(
                self._table, roster, queues, sqs, lambda: self._liveness.instance
            )
        # A fleet worker reads its own queue first, and drains the stack's (fallbacks, and
        # stops of never-claimed conversations); a single worker reads the stack's alone.
        self._pollers: list[InboxPoller] = []
        if own_inbox is not None:
            self._pollers.append(
                self._poller(own_inbox, queue_missing=self._liveness.queue_missing)
            )
        self._pollers.append(self._poller(stack_inbox, route=route))
        self._backstop = Backstop(
            self._table,
            self._runs,
            lambda: self._liveness.instance,
            interval_seconds=settings.backstop_seconds,
            grace_seconds=settings.backstop_grace_seconds,
            closing=self._closing,
            monotonic=clock.monotonic,
        )
        self._serving: asyncio.Task[None] | None = None

    def _poller(self, inbox: CancelInbox, **extra: object) -> InboxPoller:
        return InboxPoller(
            inbox,
            self._runs,
            closing=self._closing,
            closing_flag=self._closing_flag,
            wait_time_seconds=self.settings.wait_time_seconds,
            shutdown_grace_seconds=self.settings.shutdown_grace_seconds,
            set_aside=self._set_aside,
            **extra,  # type: ignore[arg-type]
        )

    def _set_aside(self, message: ReceivedMessage) -> None:
        """A copy of an unreadable message on the stack's dead-letter queue."""
        if self._dead_letter_url is None:
            self._dead_letter_url = dead_letter_url(self._sqs, self.settings.stack_queue_url)
        if self._dead_letter_url is None:
            raise DependencyFailure("sqs", "NoDeadLetterQueue", transient=False)
        with dependency_call("sqs"):
            self._sqs.send_message(
                QueueUrl=self._dead_letter_url,
                MessageBody=message.body or "(empty)",
                MessageGroupId="unreadable",
                MessageDeduplicationId=message.message_id or "unreadable",
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
        """The queue this worker reads and its claims record (after ``open``)."""
        if not self._liveness.opened:
            raise RuntimeError(
                "the worker's instance and queue are made by open() (or `async with`)"
            )
        return self._liveness.queue_url

    @property
    def instance(self) -> str:
        """This worker process's instance: its liveness item and queue (after ``open``)."""
        return self._liveness.instance

    # -- the start side ----------------------------------------------------------------

    async def open(self) -> None:
        """Join the roster and (for a fleet) create this worker's own queue; once."""
        await self._liveness.open()

    async def register(self, conversation_id: str) -> None:
        """Make the conversation STARTING: a new one, or a stopped one started again.

        Raises ``ClaimRejected`` when it is RUNNING (stop it first) or in a status not ours.
        """
        now = self._runs.now()
        result = await asyncio.to_thread(self._table.register, conversation_id, now=now)
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
        instance, queue_url = await self._liveness.identity()
        run = await self._runs.claim(
            conversation_id,
            worker_instance=instance,
            cancel_queue_url=queue_url,
            loop=loop,
            halt=halt,
        )
        await self._liveness.follow(run, instance)
        return run

    # -- one step at a time (tests, and hosts that drive the worker themselves) --------

    async def poll_once(self, wait_seconds: int | None = None) -> list[Outcome]:
        """Receive once from the queue this worker's claims record, and handle it."""
        return await self._pollers[0].poll_once(wait_seconds)

    async def poll_shared_once(self, wait_seconds: int | None = None) -> list[Outcome]:
        """Receive once from the stack's queue (a fleet worker drains it too)."""
        if len(self._pollers) < 2:
            raise RuntimeError("only a fleet worker (WORKER_QUEUE_PREFIX) drains the stack queue")
        return await self._pollers[1].poll_once(wait_seconds)

    async def backstop_once(self) -> list[Outcome]:
        """Find the runs held here whose rows say they are over; stop them."""
        return await self._backstop.once()

    async def beat_once(self) -> bool:
        """One proof of life; ``False`` when peers had declared this worker dead."""
        return await self._liveness.beat()

    async def judge_once(self) -> list[str]:
        """Watch the next peers; the instances found dead and cleaned up."""
        return await self._liveness.judge()

    # -- lifecycle ---------------------------------------------------------------------

    async def serve(self) -> None:
        """Poll the queues, run the backstop and the liveness beat, until ``shutdown()``."""
        await self.open()
        background = [
            asyncio.create_task(self._backstop.serve(), name="backstop"),
            asyncio.create_task(self._liveness.serve(), name="liveness"),
        ]
        log(
            logging.INFO,
            "worker_started",
            worker_id=self.settings.worker_id,
            worker_instance=self._liveness.instance,
            cancel_queue_url=self.cancel_queue_url,
            stack_queue_url=self.settings.stack_queue_url,
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
        """Shut down: stop polling, finish the stops received, end the runs left, delete
        the worker's own queue and liveness item.

        Runs still held are cancelled with the same cleanup bound, and their rows become
        STOPPED (``loop_stopped_via: worker_shutdown``): the table never says RUNNING for a
        loop that is gone, and the host can start the conversation again elsewhere. A claim
        still in flight is ended the same way when it lands.
        """
        self.shutdown()
        if self._serving is not None:
            await asyncio.gather(self._serving, return_exceptions=True)
        left = await self._runs.shutdown()
        await self._liveness.close()
        log(logging.INFO, "worker_stopped", worker_id=self.settings.worker_id, loops_left=left)

    async def __aenter__(self) -> Worker:
        await self.open()
        self._serving = asyncio.create_task(self.serve(), name="worker")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
