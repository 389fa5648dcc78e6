"""The agent worker: claims runs, and stops each one when the stop that targets it arrives.

Two paths lead to a stop, and either is enough: the cancel message on this worker's own
queue (delivered within a long poll), and the backstop, which finds the runs held here whose
rows say they are over, so a lost message delays a stop, never prevents it. Liveness makes
the third promise: a worker that dies has its runs released by a peer. All AWS calls are
blocking botocore calls: they run in threads, never on the event loop.

``Worker`` only coordinates; ``wiring.build_worker`` makes it from the settings. The parts,
each testable alone: ``runs`` (claims, and stopping a run once), ``polling`` (one queue),
``backstop`` (the table), ``liveness`` (the worker's instance, queue and proof of life, and
its judging of peers), ``routing`` (fallback cancels to their holder).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import TracebackType

from openhands_stop.domain.models import RunEnd
from openhands_stop.worker.backstop import Backstop
from openhands_stop.worker.liveness import Liveness
from openhands_stop.worker.logs import log
from openhands_stop.worker.polling import InboxPoller
from openhands_stop.worker.runs import (
    AgentLoop,
    ClaimRejected,
    Halt,
    Outcome,
    Run,
    Runs,
    WorkerClosed,
)
from openhands_stop.worker.shutdown import Shutdown

__all__ = ["AgentLoop", "ClaimRejected", "Halt", "Outcome", "Run", "Worker", "WorkerClosed"]


class Worker:
    """Registers and claims conversations, runs their loops, and stops them when told.

    Made by ``wiring.build_worker(settings)``; use it as ``async with worker:``, which joins
    the fleet's roster, creates the worker's own queue (with ``WORKER_QUEUE_PREFIX``), polls,
    runs the backstop and the liveness beat in the background; then
    ``await worker.register(id)`` and ``await worker.start(id, loop)``.
    """

    def __init__(
        self,
        *,
        runs: Runs,
        liveness: Liveness,
        backstop: Backstop,
        queue_poller: InboxPoller,
        stack_queue_poller: InboxPoller | None,
        shutdown: Shutdown,
    ) -> None:
        """``queue_poller`` reads the queue this worker's claims record: its own in a fleet,
        the stack queue for a single worker. A fleet worker also drains the stack queue
        (``stack_queue_poller``): fallbacks, and stops of never-claimed conversations."""
        self._runs = runs
        self._liveness = liveness
        self._backstop = backstop
        self._queue_poller = queue_poller
        self._stack_queue_poller = stack_queue_poller
        self._shutdown = shutdown
        self._serving: asyncio.Task[None] | None = None

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
    def worker_id(self) -> str:
        return self._runs.worker_id

    @property
    def queue_url(self) -> str:
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
        await self._runs.register(conversation_id)

    async def start(self, conversation_id: str, agent_loop: AgentLoop) -> asyncio.Task[object]:
        """Claim the conversation (STARTING to RUNNING, a new run), then run its loop as a task.

        Raises ``ClaimRejected`` when the conversation is not STARTING, in particular when a
        stop landed first: the stop wins and the loop never starts.
        """
        run = await self._claim(conversation_id, loop=agent_loop)
        assert run.task is not None
        return run.task

    async def adopt(self, conversation_id: str, halt: Halt) -> Run:
        """Claim the conversation for a loop its host runs itself: a stop for this run awaits
        ``halt()`` (an OpenHands ``close_session``, say). The host calls ``release`` when it
        ends the loop on its own."""
        return await self._claim(conversation_id, halt=halt)

    async def release(self, conversation_id: str, via: RunEnd = RunEnd.HOST) -> bool:
        """The host ended the conversation's loop itself: the row becomes STOPPED."""
        return await self._runs.release(conversation_id, via)

    async def _claim(
        self, conversation_id: str, *, loop: AgentLoop | None = None, halt: Halt | None = None
    ) -> Run:
        if self._shutdown.requested:
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
        return await self._queue_poller.poll_once(wait_seconds)

    async def poll_stack_queue_once(self, wait_seconds: int | None = None) -> list[Outcome]:
        """Receive once from the stack queue (a fleet worker drains it too)."""
        if self._stack_queue_poller is None:
            raise RuntimeError("only a fleet worker (WORKER_QUEUE_PREFIX) drains the stack queue")
        return await self._stack_queue_poller.poll_once(wait_seconds)

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
            worker_id=self.worker_id,
            worker_instance=self._liveness.instance,
            queue_url=self.queue_url,
            backstop_seconds=self._backstop.interval_seconds,
        )
        pollers = [self._queue_poller, self._stack_queue_poller]
        try:
            await asyncio.gather(*(poller.serve() for poller in pollers if poller is not None))
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)

    def shutdown(self) -> None:
        """Stop polling; safe to call from a signal handler, and more than once."""
        self._shutdown.request()

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
        log(logging.INFO, "worker_stopped", worker_id=self.worker_id, loops_left=left)

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
