"""An agent host for ``make fleet``: one worker embedded through its public Python API.

    python -m local.fleet.host      # settings from the environment, as any worker's

It reads commands on stdin, one a line, and answers each on stdout as one JSON object:

    start <conversation_id> <token>   register, then start a silent agent loop
                                      -> {"reply": token, "ok": true, "run_id": ...}
                                      or {"reply": token, "ok": false, "error": ...}
    stats <token>                     -> {"reply": token, "ok": true, "aws": {...}}: the
                                      worker's AWS requests so far, by kind
    hang <seconds>                    block the event loop (``time.sleep`` on its thread):
                                      a hung worker; ``host_hang_begin``/``_end`` lines
    quit                              (or end of input) a clean shutdown: the worker closes;
                                      ``host_closed`` carries the requests and seconds

``FLEET_CLOCK_OFFSET_SECONDS`` (read here only) sets the worker's wall clock that many
seconds off (``Clock.skewed``): its decisions must not depend on it.

The agent loop does nothing until it is cancelled, then returns. The host writes a
``loop_started`` and a ``loop_ended`` line (stdout, with the run id) for each loop, so the
orchestrator sees every loop that ends, whoever ended it. The worker's own JSON log lines
go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from openhands_stop.aws.clients import _session
from openhands_stop.wiring import build_worker
from openhands_stop.worker import AgentLoop, ClaimRejected, Worker, WorkerSettings
from openhands_stop.worker.clock import Clock
from openhands_stop.worker.logs import configure_json_logging

from local.emulation import ROOT
from local.fleet.counter import RequestCounter

CLOCK_OFFSET_VARIABLE = "FLEET_CLOCK_OFFSET_SECONDS"  # read here alone


def emit(**fields: Any) -> None:
    """One JSON line on stdout (the host's replies and loop events), stamped as the
    worker's log lines are, so the orchestrator can order them."""
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
    sys.stdout.write(json.dumps({"time": stamp, **fields}, default=str) + "\n")
    sys.stdout.flush()


def silent_agent_loop(worker: Worker) -> AgentLoop:
    """An agent loop that waits forever and returns when cancelled."""

    async def run(conversation_id: str) -> None:
        run_id = worker.run_id(conversation_id)
        emit(event="loop_started", conversation_id=conversation_id, run_id=run_id)
        cancelled = False
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled = True
        finally:
            emit(
                event="loop_ended",
                conversation_id=conversation_id,
                run_id=run_id,
                cancelled=cancelled,
            )

    return run


async def start(worker: Worker, conversation_id: str, token: str) -> None:
    try:
        await worker.register(conversation_id)
        await worker.start(conversation_id, silent_agent_loop(worker))
    except ClaimRejected as rejected:
        emit(reply=token, ok=False, error="claim_rejected", status=str(rejected.status))
        return
    except Exception as error:  # answered, so the orchestrator never waits on it
        emit(reply=token, ok=False, error=f"{type(error).__name__}: {error}")
        return
    emit(reply=token, ok=True, run_id=worker.run_id(conversation_id))


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    pending: set[asyncio.Task[None]] = set()
    counter = RequestCounter()
    counter.install(_session())  # before the worker makes its clients
    offset = float(os.environ.get(CLOCK_OFFSET_VARIABLE) or 0)
    clock = Clock.skewed(offset) if offset else Clock()
    opened = time.monotonic()
    async with build_worker(WorkerSettings.from_environment(), clock=clock) as worker:
        counter.own_instance = lambda: worker.instance
        emit(
            event="host_ready",
            queue_url=worker.queue_url,
            instance=worker.instance,
            clock_offset_seconds=offset,
        )
        while line := (await reader.readline()).decode():
            words = line.split()
            if words == ["quit"]:
                break
            if len(words) == 3 and words[0] == "start":
                task = asyncio.create_task(start(worker, words[1], words[2]))
                pending.add(task)
                task.add_done_callback(pending.discard)
            elif len(words) == 2 and words[0] == "stats":
                emit(reply=words[1], ok=True, aws=counter.snapshot())
            elif len(words) == 2 and words[0] == "hang":
                emit(event="host_hang_begin", seconds=float(words[1]))
                time.sleep(float(words[1]))
                emit(event="host_hang_end")
            else:
                emit(event="host_unknown_command", line=line.rstrip())
        if pending:
            await asyncio.wait(pending)
    emit(event="host_closed", aws=counter.snapshot(), seconds=round(time.monotonic() - opened, 3))


def spawn(env: dict[str, str]) -> subprocess.Popen[str]:
    """This module as a host process: commands on its stdin, lines on stdout and stderr
    (``make fleet``'s hosts and ``make bench``'s confirmed-stop worker)."""
    return subprocess.Popen(
        [sys.executable, "-m", "local.fleet.host"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )


def main() -> None:
    configure_json_logging()
    asyncio.run(serve())


if __name__ == "__main__":
    main()
