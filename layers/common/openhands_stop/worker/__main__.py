"""``python -m openhands_stop.worker``: one worker, settings from the environment.

``--demo ID`` (or ``DEMO_CONVERSATION_IDS=a,b``) registers those conversations (new or
stopped ones become STARTING), claims them and runs the demo agent loop for each: a tick a
second until a stop arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from openhands_stop.wiring import build_worker
from openhands_stop.worker.demo import demo_agent_loop
from openhands_stop.worker.logs import configure_json_logging, log
from openhands_stop.worker.runs import ClaimRejected, WorkerClosed
from openhands_stop.worker.settings import WorkerSettings


async def serve(settings: WorkerSettings, demo_ids: list[str], tick_seconds: float) -> None:
    worker = build_worker(settings)
    worker.install_signal_handlers()
    async with worker:
        for conversation_id in demo_ids:
            try:
                await worker.register(conversation_id)
                await worker.start(conversation_id, demo_agent_loop(tick_seconds))
            except WorkerClosed:
                break  # SIGTERM while the demos were being claimed
            except ClaimRejected as rejected:
                log(
                    logging.WARNING,
                    "demo_not_started",
                    conversation_id=conversation_id,
                    status=rejected.status,
                )
        await worker.wait_closed()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m openhands_stop.worker", description=__doc__)
    parser.add_argument(
        "--demo",
        action="append",
        default=[],
        metavar="ID",
        help="claim this conversation and run the demo agent loop",
    )
    parser.add_argument(
        "--tick-seconds", type=float, default=float(os.environ.get("DEMO_TICK_SECONDS", "1"))
    )
    args = parser.parse_args(argv)
    from_env = [i for i in os.environ.get("DEMO_CONVERSATION_IDS", "").split(",") if i.strip()]
    configure_json_logging()
    settings = WorkerSettings.from_environment()
    asyncio.run(serve(settings, [*from_env, *args.demo], args.tick_seconds))


if __name__ == "__main__":
    main()
