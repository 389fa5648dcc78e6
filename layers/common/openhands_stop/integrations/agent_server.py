"""An OpenHands 1.x agent-server as a worker of this stack: a sidecar process beside it.

Run next to the agent-server (``pip install "openhands-stop[agent-server]"``)::

    AGENT_SERVER_URL=http://127.0.0.1:8000 AGENT_SERVER_API_KEY=<its SESSION_API_KEY> \\
    CONVERSATIONS_TABLE_NAME=... CANCEL_QUEUE_URL=... WORKER_QUEUE_PREFIX=... \\
    python -m openhands_stop.integrations.agent_server

It embeds this project's ``Worker`` (its own cancel queue, backstop and liveness) and keeps
it in step with the agent-server, which it reaches over its REST API only:

- every ``AGENT_SERVER_SYNC_SECONDS`` it lists the agent-server's conversations; one whose
  agent runs (``running``, ``waiting_for_confirmation``) is registered and adopted under
  our conversation id: its tag ``stopid`` if it has one, else its UUID as 32 hex digits
  (the form OpenHands' URLs and webhooks use);
- a stop for a run held here (its cancel, or the backstop) is carried out with ``POST
  /interrupt`` (it cancels the LLM call or tool in flight), confirmed by reading the
  conversation until it is no longer running; if it still runs after
  ``AGENT_SERVER_CONFIRM_SECONDS``, ``POST /pause`` follows (it waits for the step);
- a conversation the agent-server ends by itself is released on its row: ``finished``
  (``loop_stopped_via: finished``), ``error``/``stuck`` (``failed``), paused or idle by
  someone else, deleted, or gone after a restart (``host``);
- an agent-server that cannot be reached for ``AGENT_SERVER_LOST_SECONDS`` has its runs
  released (``worker_lost``): its loops died with it;
- SIGTERM: the runs still held are interrupted, recorded ``worker_shutdown``, and the
  worker's queue and liveness item deleted. A sidecar that dies is released by its peers.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import Field

from openhands_stop.domain.models import RunEnd
from openhands_stop.settings import EnvironmentSettings
from openhands_stop.wiring import build_worker
from openhands_stop.worker import ClaimRejected, Worker, WorkerClosed, WorkerSettings
from openhands_stop.worker.logs import configure_json_logging, log

__all__ = ["AgentServerSettings", "AgentServerSidecar", "our_conversation_id"]

# The agent-server's execution statuses: an agent loop at work, and how others end one.
ACTIVE = frozenset({"running", "waiting_for_confirmation"})
ENDED_BY_ITSELF = {"finished": RunEnd.FINISHED, "error": RunEnd.FAILED, "stuck": RunEnd.FAILED}
ID_TAG = "stopid"
_OUR_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class AgentServerSettings(EnvironmentSettings):
    """Where the agent-server is, and the sidecar's timings (environment variables)."""

    url: str = Field(alias="AGENT_SERVER_URL", default="http://127.0.0.1:8000", min_length=1)
    # The agent-server's SESSION_API_KEY (sent as X-Session-API-Key); empty: none set there.
    api_key: str = Field(alias="AGENT_SERVER_API_KEY", default="")
    sync_seconds: float = Field(
        alias="AGENT_SERVER_SYNC_SECONDS", default=1, gt=0, le=3600, allow_inf_nan=False
    )
    confirm_seconds: float = Field(
        alias="AGENT_SERVER_CONFIRM_SECONDS", default=5, gt=0, le=3600, allow_inf_nan=False
    )
    lost_seconds: float = Field(
        alias="AGENT_SERVER_LOST_SECONDS", default=15, gt=0, le=86400, allow_inf_nan=False
    )
    request_timeout_seconds: float = Field(
        alias="AGENT_SERVER_TIMEOUT_SECONDS", default=10, gt=0, le=600, allow_inf_nan=False
    )


def our_conversation_id(conversation: dict[str, Any]) -> str:
    """The id a stop names: the ``stopid`` tag when it is a valid one, else the UUID's hex."""
    tags = conversation.get("tags") or {}
    tagged = tags.get(ID_TAG) if isinstance(tags, dict) else None
    if isinstance(tagged, str) and _OUR_ID.match(tagged):
        return tagged
    return uuid.UUID(str(conversation["id"])).hex


@dataclass(frozen=True)
class Listed:
    """One conversation as the agent-server lists it."""

    agent_id: str  # the agent-server's UUID
    status: str


class AgentServerUnreachable(Exception):
    """The agent-server did not answer (refused, timed out) or answered 5xx."""


class AgentServerSidecar:
    """Keeps a ``Worker`` in step with one agent-server's conversations."""

    def __init__(
        self,
        worker: Worker,
        settings: AgentServerSettings,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.worker = worker
        self.settings = settings
        headers = {"X-Session-API-Key": settings.api_key} if settings.api_key else {}
        self.client = client or httpx.AsyncClient(
            base_url=settings.url.rstrip("/"),
            headers=headers,
            timeout=settings.request_timeout_seconds,
        )
        self.held: dict[str, str] = {}  # our id -> the agent-server's UUID, for runs held here
        self._rejected: set[str] = set()  # register refused (RUNNING elsewhere): logged once
        self._unreachable_since: float | None = None
        self._halted: dict[str, float] = {}  # our id -> when a stop of ours was confirmed

    # -- the agent-server's API ------------------------------------------------------

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise AgentServerUnreachable(type(error).__name__) from error
        if response.status_code >= 500:
            raise AgentServerUnreachable(f"HTTP {response.status_code}")
        return response

    async def listing(self) -> dict[str, Listed]:
        """Every conversation the agent-server has, by our id (``/search``, page by page)."""
        found: dict[str, Listed] = {}
        page_id: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100}
            if page_id:
                params["page_id"] = page_id
            response = await self._call("GET", "/api/conversations/search", params=params)
            response.raise_for_status()
            page = response.json()
            for item in page.get("items", []):
                try:
                    found[our_conversation_id(item)] = Listed(
                        str(item["id"]), str(item.get("execution_status"))
                    )
                except (KeyError, ValueError, TypeError):
                    continue
            page_id = page.get("next_page_id")
            if not page_id:
                return found

    async def status(self, agent_id: str) -> str | None:
        """The conversation's execution status; ``None`` when the agent-server has none."""
        response = await self._call("GET", f"/api/conversations/{agent_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return str(response.json().get("execution_status"))

    # -- a stop: interrupt, confirm, escalate ----------------------------------------

    async def halt(self, conversation_id: str, agent_id: str) -> None:
        """Carry a stop out: ``interrupt``, then read until the agent no longer runs; past
        ``AGENT_SERVER_CONFIRM_SECONDS``, ``pause`` (which waits for the step) and read on
        as long again; then give up (the worker logs ``halt_failed``). The worker records
        the stop after ``CLEANUP_TIMEOUT_SECONDS`` at most either way."""
        started = time.monotonic()
        response = await self._call("POST", f"/api/conversations/{agent_id}/interrupt")
        if response.status_code == 404:
            self._halted[conversation_id] = time.monotonic()
            return  # deleted meanwhile: nothing runs
        paused = False
        while True:
            current = await self.status(agent_id)
            if current is None or current not in ACTIVE:
                self._halted[conversation_id] = time.monotonic()
                log(
                    logging.INFO,
                    "agent_server_interrupted",
                    conversation_id=conversation_id,
                    agent_server_id=agent_id,
                    status=current,
                    escalated=paused,
                    confirmed_ms=round((time.monotonic() - started) * 1000, 1),
                )
                return
            waited = time.monotonic() - started
            if not paused and waited >= self.settings.confirm_seconds:
                paused = True
                log(logging.WARNING, "agent_server_pause", conversation_id=conversation_id)
                await self._call("POST", f"/api/conversations/{agent_id}/pause")
                continue
            if paused and waited >= 2 * self.settings.confirm_seconds:
                log(
                    logging.ERROR,
                    "agent_server_still_running",
                    conversation_id=conversation_id,
                    agent_server_id=agent_id,
                )
                raise RuntimeError(f"{agent_id} still runs after interrupt and pause")
            await asyncio.sleep(0.05)

    # -- keeping the worker in step ---------------------------------------------------

    async def sync_once(self) -> None:
        """List the agent-server's conversations once: adopt the new running ones, release
        the held ones it ended by itself. An unreachable agent-server, past its bound,
        has its runs released."""
        listed_at = time.monotonic()
        try:
            listed = await self.listing()
        except (AgentServerUnreachable, httpx.HTTPStatusError, ValueError) as error:
            await self._unreachable(error)
            return
        for conversation_id, agent_id in list(self.held.items()):
            if conversation_id not in self.worker.running:
                del self.held[conversation_id]  # stopped through us: the worker recorded it
                continue
            seen = listed.get(conversation_id)
            if seen is not None and seen.agent_id == agent_id and seen.status in ACTIVE:
                continue
            via = ENDED_BY_ITSELF.get(seen.status, RunEnd.HOST) if seen else RunEnd.HOST
            await self._release(conversation_id, via, seen.status if seen else "deleted")
        for conversation_id, seen in listed.items():
            if seen.status not in ACTIVE:
                self._rejected.discard(conversation_id)
                if self._halted.get(conversation_id, float("inf")) < listed_at:
                    del self._halted[conversation_id]
            elif conversation_id not in self.held and (
                self._halted.get(conversation_id, float("-inf")) < listed_at
            ):
                # (A listing read before one of our stops was confirmed may still say
                # running: only a later one can tell the agent was run again.)
                await self._adopt(conversation_id, seen.agent_id)
        if self._unreachable_since is not None:
            self._unreachable_since = None
            log(logging.INFO, "agent_server_reachable", conversations=len(listed))

    async def _adopt(self, conversation_id: str, agent_id: str) -> None:
        if conversation_id in self.worker.running:
            return  # a run of ours still being ended
        try:
            await self.worker.register(conversation_id)
            self.held[conversation_id] = agent_id
            await self.worker.adopt(
                conversation_id, halt=lambda: self.halt(conversation_id, agent_id)
            )
        except ClaimRejected as rejected:
            self.held.pop(conversation_id, None)
            if conversation_id not in self._rejected:
                self._rejected.add(conversation_id)
                log(
                    logging.WARNING,
                    "agent_server_not_adopted",
                    conversation_id=conversation_id,
                    agent_server_id=agent_id,
                    status=rejected.status,
                )
            return
        except ValueError:  # its previous run here is still being stopped
            self.held.pop(conversation_id, None)
            return
        self._rejected.discard(conversation_id)
        log(
            logging.INFO,
            "agent_server_adopted",
            conversation_id=conversation_id,
            agent_server_id=agent_id,
        )

    async def _release(self, conversation_id: str, via: RunEnd, status: str) -> None:
        self.held.pop(conversation_id, None)
        released = await self.worker.release(conversation_id, via=via)
        if released:
            log(
                logging.INFO,
                "agent_server_released",
                conversation_id=conversation_id,
                status=status,
                via=via,
            )

    async def _unreachable(self, error: Exception) -> None:
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
            log(logging.WARNING, "agent_server_unreachable", error=str(error))
        if now - self._unreachable_since < self.settings.lost_seconds:
            return
        for conversation_id in list(self.held):
            await self._release(conversation_id, RunEnd.WORKER_LOST, "unreachable")

    async def serve(self) -> None:
        """Sync every ``AGENT_SERVER_SYNC_SECONDS`` until cancelled."""
        while True:
            try:
                await self.sync_once()
            except WorkerClosed:
                return
            except Exception as error:  # one failing pass never ends the sidecar
                log(logging.WARNING, "agent_server_sync_failed", error=type(error).__name__)
            await asyncio.sleep(self.settings.sync_seconds)

    async def aclose(self) -> None:
        await self.client.aclose()


async def run(worker_settings: WorkerSettings, settings: AgentServerSettings) -> None:
    """The sidecar: a worker, and the sync beside it, until SIGTERM."""
    worker = build_worker(worker_settings)
    worker.install_signal_handlers()
    sidecar = AgentServerSidecar(worker, settings)
    try:
        # Leaving the block halts (interrupts) the runs still held: the client must be open.
        async with worker:
            log(logging.INFO, "agent_server_sidecar_started", agent_server_url=settings.url)
            syncing = asyncio.create_task(sidecar.serve(), name="agent-server-sync")
            try:
                await worker.wait_closed()
            finally:
                syncing.cancel()
                await asyncio.gather(syncing, return_exceptions=True)
    finally:
        await sidecar.aclose()


def main() -> None:
    configure_json_logging()
    asyncio.run(run(WorkerSettings.from_environment(), AgentServerSettings.from_environment()))


if __name__ == "__main__":
    main()
