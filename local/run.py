"""``make run``: the stop route on http://localhost:3000, an embedded AWS emulation, and one
agent worker running a demo agent loop that the printed ``curl`` stops."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from local.emulation import (
    DEMO_CONVERSATIONS,
    DEMO_SESSION_KEY,
    Stack,
    create_stack,
    moto_server,
    run_route,
    seed,
    stop_process,
)

DEMO_AGENT = "demo-agent"
"""Seeded STARTING; the worker claims it (RUNNING) and runs the demo loop for it."""

WORKER_ID = "local-worker-1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=3000, help="port of the stop route")
    parser.add_argument("--aws-port", type=int, default=5000, help="port of the emulation")
    args = parser.parse_args()

    with moto_server(args.aws_port) as endpoint:
        stack = create_stack(endpoint)
        seed(stack, {**DEMO_CONVERSATIONS, DEMO_AGENT: "STARTING"})
        # The stack's default StopWaitSeconds: the stop answers once the loop has stopped.
        os.environ.update({**stack.function_environment(), "STOP_WAIT_SECONDS": "5"})
        worker = _start_worker(stack)
        try:
            _wait_for_claim(stack, worker)
            print(_banner(args.port, endpoint, stack), flush=True)
            # The service reads its settings from the environment just set.
            run_route(args.port, log_level="warning")
        finally:
            stop_process(worker)  # SIGTERM: the worker's clean shutdown


def _start_worker(stack: Stack) -> subprocess.Popen[bytes]:
    """The worker as its own process, as an agent host runs it; its output shares ours."""
    env = {
        **os.environ,
        **stack.function_environment(),
        "WORKER_ID": WORKER_ID,
        "BACKSTOP_SECONDS": "5",
        # Ctrl-C should not wait out a 20 s long poll: what it catches comes back later.
        "SHUTDOWN_GRACE_SECONDS": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "openhands_stop.worker", "--demo", DEMO_AGENT], env=env
    )


def _wait_for_claim(stack: Stack, worker: subprocess.Popen[bytes], timeout: float = 30) -> None:
    dynamodb = stack.client("dynamodb")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.poll() is None:
        item = dynamodb.get_item(
            TableName=stack.table_name,
            Key={"conversation_id": {"S": DEMO_AGENT}},
            ConsistentRead=True,
        ).get("Item", {})
        if item.get("status", {}).get("S") == "RUNNING":
            return
        time.sleep(0.1)
    raise SystemExit(f"the worker did not claim {DEMO_AGENT}")


def _banner(port: int, endpoint: str, stack: Stack) -> str:
    url = f"http://localhost:{port}/api/conversations/{DEMO_AGENT}/stop"
    return f"""
Stop route     http://localhost:{port}  (docs: http://localhost:{port}/docs)
AWS emulation  {endpoint}  table {stack.table_name}, queue {stack.stack_queue_url}
Session key    {DEMO_SESSION_KEY}   (the emulation's own; never a real secret)
Agent worker   {WORKER_ID}: runs {DEMO_AGENT} (claimed: RUNNING), ticking once a second
Also seeded    demo-running (RUNNING), demo-starting (STARTING), demo-stopped (STOPPED)

Stop the live agent loop (its ticks stop, the worker logs conversation_stopped):
  curl -s -X POST -H 'X-Session-API-Key: {DEMO_SESSION_KEY}' {url}

Ctrl-C stops everything.
"""


if __name__ == "__main__":
    main()
