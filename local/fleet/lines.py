"""What the hosts write, as the harness reads it: every line kept, the ones it waits for
handed to their waiters (a reply, a host ready, a run stopped), the rest noted."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from local.fleet.processes import Host, HostDied
from local.fleet.result import TrackedRun

Key = tuple[str, str]  # ("reply", token), ("ready", host index), ("stopped", run id)


def wall(document: dict[str, Any]) -> float:
    """When a line says it happened: the worker's ``time``, else when it was read."""
    stamp = document.get("time")
    if isinstance(stamp, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(stamp).timestamp()
    received: float = document["_received"]
    return received


class HostLines:
    """The lines of every host, received on the harness's event loop (the hosts' reader
    threads hand them over through ``sink``)."""

    def __init__(self, hosts: list[Host], runs: dict[str, TrackedRun]) -> None:
        self.hosts = hosts
        self.runs = runs
        self.events: list[tuple[int, str, dict[str, Any]]] = []
        self.instances: dict[int, str] = {}  # the host's current instance
        self.claimed_instance: dict[str, str] = {}  # run id -> the instance its claim recorded
        self.started_wall: dict[str, float] = {}  # run id -> its loop_started
        self.host_reports: dict[int, dict[str, Any]] = {}  # host_closed lines
        self._waiters: dict[Key, asyncio.Future[dict[str, Any]]] = {}
        self._arrived: dict[Key, dict[str, Any]] = {}
        self._waiting_host: dict[Key, int] = {}
        self._loop = asyncio.get_running_loop()

    def sink(self, index: int, source: str, document: dict[str, Any]) -> None:
        """From a reader thread: the line goes to the loop."""
        with contextlib.suppress(RuntimeError):  # the loop is gone: the run is over
            self._loop.call_soon_threadsafe(self._on_line, index, source, document)

    def _on_line(self, index: int, source: str, document: dict[str, Any]) -> None:
        self.events.append((index, source, document))
        event = document.get("event")
        if "reply" in document:
            self._arrive(("reply", str(document["reply"])), document)
        elif event == "host_ready":
            self.hosts[index].queue_url = document.get("queue_url")
            self.instances[index] = str(document.get("instance"))
            self._arrive(("ready", str(index)), document)
        elif event == "conversation_stopped" and document.get("run_id"):
            self._arrive(("stopped", str(document["run_id"])), document)
        elif event == "run_ended" and document.get("via") == "worker_lost":
            # A loop halted because peers had released its run (the worker hung).
            self._arrive(("stopped", str(document.get("run_id"))), document)
        elif event == "conversation_claimed" and document.get("run_id"):
            self.claimed_instance[str(document["run_id"])] = str(document.get("worker_instance"))
        elif event in {"worker_rejoined", "worker_queue_recreated"}:
            self.instances[index] = str(document.get("worker_instance"))
        elif event == "loop_started" and document.get("run_id"):
            self.started_wall[str(document["run_id"])] = wall(document)
        elif event == "loop_ended" and document.get("run_id"):
            run = self.runs.get(str(document["run_id"]))
            if run is not None:
                run.ended = document
        elif event == "host_closed":
            self.host_reports[index] = document
        elif event == "host_eof":
            self._host_gone(index)

    def _arrive(self, key: Key, document: dict[str, Any]) -> None:
        waiter = self._waiters.pop(key, None)
        self._waiting_host.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(document)
        else:
            self._arrived[key] = document

    def _host_gone(self, index: int) -> None:
        """Every line of this host has been read: what it has not said, it never will."""
        for key, host in list(self._waiting_host.items()):
            if host == index:
                self._waiting_host.pop(key, None)
                waiter = self._waiters.pop(key, None)
                if waiter is not None and not waiter.done():
                    waiter.set_exception(HostDied(f"host {index} ended"))

    async def wait(self, key: Key, host: int, timeout: float) -> dict[str, Any]:
        """The line ``key`` names, from host ``host``: ``HostDied`` if it ends first."""
        if key in self._arrived:
            return self._arrived.pop(key)
        if self.hosts[host].closed.is_set():
            raise HostDied(f"host {host} ended")
        waiter: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._waiters[key] = waiter
        self._waiting_host[key] = host
        try:
            return await asyncio.wait_for(waiter, timeout)
        finally:
            self._waiters.pop(key, None)
            self._waiting_host.pop(key, None)

    def write(self, path: Path) -> None:
        """Every line the hosts and workers wrote, one JSON object a line, for a post-mortem."""
        with path.open("w", encoding="utf-8") as out:
            for host, source, document in self.events:
                out.write(json.dumps({"host": host, "source": source, **document}) + "\n")
            for run in self.runs.values():
                out.write(json.dumps({"source": "harness", "run": dataclasses.asdict(run)}) + "\n")
