"""An OpenHands 0.53 server as a worker of this stack: a stop through the Lambda closes the
session in OpenHands, as OpenHands' own stop route does.

Set on the OpenHands server (``pip install "openhands-stop[openhands]"``)::

    CONVERSATION_MANAGER_CLASS=openhands_stop.integrations.openhands.StopAwareConversationManager

plus the worker's variables (``CONVERSATIONS_TABLE_NAME``, ``CANCEL_QUEUE_URL``,
``WORKER_QUEUE_PREFIX``...; see ``openhands_stop.worker.settings``). Then:

- starting an agent loop (a socket.io join, ``POST /api/conversations``...) registers the
  conversation and claims it for this server before OpenHands creates its session; a
  conversation ``RUNNING`` on another worker is refused (stop it first);
- a cancel for a run this server owns (from its queue, or found by the backstop) calls
  OpenHands' own ``close_session``: the controller's state is saved, the agent set to
  ``STOPPED``, connected clients are told and disconnected, the runtime's shutdown starts;
- a session OpenHands closes itself (its stop and delete routes, the idle reaper, the
  too-many-conversations rule, server shutdown) releases the claim: the record becomes
  ``STOPPED``, so the table never says ``RUNNING`` for a loop that is gone.

Nothing in the Lambda function imports this module; it needs ``openhands-ai`` 0.53.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from openhands.server.conversation_manager.standalone_conversation_manager import (
    StandaloneConversationManager,
)
from openhands.server.monitoring import MonitoringListener
from socketio.exceptions import ConnectionRefusedError as SocketConnectionRefusedError

from openhands_stop.domain.models import RunEnd
from openhands_stop.wiring import build_worker
from openhands_stop.worker import ClaimRejected, Worker, WorkerSettings
from openhands_stop.worker.logs import configure_json_logging, log
from openhands_stop.worker.logs import logger as worker_logger

__all__ = ["ConversationNotClaimed", "StopAwareConversationManager"]


class ConversationNotClaimed(SocketConnectionRefusedError):  # type: ignore[misc]
    """The conversation could not be claimed for this server: it is ``RUNNING`` on another
    worker, or a stop landed while it was being claimed. No OpenHands session is started.

    A socket.io ``ConnectionRefusedError``, so a client joining over socket.io is refused with
    this message; elsewhere (``POST /api/conversations``) it is an error like any other."""

    def __init__(self, conversation_id: str, status: object) -> None:
        super().__init__(f"conversation {conversation_id} not started here: its status is {status}")
        self.conversation_id = conversation_id
        self.status = status


@dataclass
class _StartGate:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


@dataclass
class StopAwareConversationManager(StandaloneConversationManager):  # type: ignore[misc]
    """OpenHands' standalone manager, whose agent loops are claimed, stopped and released
    through this stack's table and cancel queues (``openhands_stop.worker.Worker``)."""

    _stop_worker: Worker | None = None
    _start_locks: dict[str, _StartGate] = field(default_factory=dict)

    @classmethod
    def get_instance(
        cls,
        sio: Any,
        config: Any,
        file_store: Any,
        server_config: Any,
        monitoring_listener: Any,
    ) -> StopAwareConversationManager:
        # The standalone manager's get_instance names its own class: instantiate this one.
        return cls(
            sio, config, file_store, server_config, monitoring_listener or MonitoringListener()
        )

    # -- lifecycle: OpenHands' app lifespan enters and exits the manager ------------------

    async def __aenter__(self) -> StopAwareConversationManager:
        await super().__aenter__()
        if not worker_logger.handlers:
            configure_json_logging()
        worker = build_worker(WorkerSettings.from_environment())
        await worker.__aenter__()  # its own queue (a fleet), its polling, its backstop
        self._stop_worker = worker
        return self

    async def __aexit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        # The worker ends the runs it still holds by closing their sessions (its halt), and
        # records them STOPPED (via worker_shutdown): the loops go with the server.
        worker, self._stop_worker = self._stop_worker, None
        try:
            if worker is not None:
                await worker.__aexit__(exc_type, exc_value, traceback)
        finally:
            await super().__aexit__(exc_type, exc_value, traceback)

    @property
    def stop_worker(self) -> Worker:
        """The worker this manager runs (between the app's startup and its shutdown)."""
        if self._stop_worker is None:
            raise RuntimeError("the conversation manager has not been entered (app lifespan)")
        return self._stop_worker

    # -- starting: register and claim, then OpenHands starts its session ------------------

    async def _start_agent_loop(
        self,
        sid: str,
        settings: Any,
        user_id: str | None,
        initial_user_msg: Any = None,
        replay_json: str | None = None,
    ) -> Any:
        # One start per conversation at a time (two joins at once claim once).
        gate = self._start_locks.setdefault(sid, _StartGate())
        gate.users += 1
        try:
            async with gate.lock:
                existing = self._local_agent_loops_by_sid.get(sid)
                if existing is not None:  # a concurrent join started it while we waited
                    return existing
                return await self._claim_and_start(
                    sid, settings, user_id, initial_user_msg, replay_json
                )
        finally:
            gate.users -= 1
            if gate.users == 0:
                del self._start_locks[sid]

    async def _claim_and_start(
        self,
        sid: str,
        settings: Any,
        user_id: str | None,
        initial_user_msg: Any,
        replay_json: str | None,
    ) -> Any:
        worker = self.stop_worker
        session_created = asyncio.Event()
        try:
            await worker.register(sid)  # new or STOPPED: STARTING; RUNNING: rejected
            await worker.adopt(sid, halt=lambda: self._close_for_stop(sid, session_created))
        except ClaimRejected as rejected:
            # RUNNING on another worker, or a stop landed while claiming: the stop wins.
            raise ConversationNotClaimed(sid, rejected.status) from rejected
        except ValueError as busy:  # the previous run here is still being stopped
            raise ConversationNotClaimed(sid, "being stopped") from busy
        try:
            return await super()._start_agent_loop(
                sid, settings, user_id, initial_user_msg, replay_json
            )
        except BaseException:
            await worker.release(sid, via=RunEnd.FAILED)
            raise
        finally:
            session_created.set()

    # -- stopping: a stop closes the session the way OpenHands' own stop route does -------

    async def _close_for_stop(self, sid: str, session_created: asyncio.Event) -> None:
        """The worker's halt for this run (a cancel, the backstop, the worker's shutdown):
        OpenHands' own ``close_session``."""
        await session_created.wait()  # a cancel may arrive before the session exists
        await self.close_session(sid)

    async def _close_session(self, sid: str) -> None:
        """Every close in OpenHands ends here (its stop and delete routes, the idle reaper,
        the too-many-conversations rule, its shutdown). After OpenHands has closed the
        session, a close no stop asked for releases the run: the record becomes STOPPED
        (``loop_stopped_via: host``). A close a stop asked for is recorded by the worker
        (``release`` then does nothing)."""
        await super()._close_session(sid)
        worker = self._stop_worker
        if worker is None or sid in self._local_agent_loops_by_sid:
            return
        try:
            await worker.release(sid, via=RunEnd.HOST)
        except Exception as error:
            # The session is closed either way; the backstop cannot fix a row no run holds,
            # so this is the one log line an operator needs.
            log(
                logging.WARNING,
                "release_failed",
                conversation_id=sid,
                error=type(error).__name__,
            )
