"""``make run``: the stop route on http://localhost:3000 against an embedded AWS emulation."""

from __future__ import annotations

import argparse
import os

import uvicorn

from local.emulation import DEMO_SESSION_KEY, create_stack, moto_server, seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=3000, help="port of the stop route")
    parser.add_argument("--aws-port", type=int, default=5000, help="port of the emulation")
    args = parser.parse_args()

    with moto_server(args.aws_port) as endpoint:
        stack = create_stack(endpoint)
        seed(stack)
        os.environ.update(stack.function_environment())
        # Imported only now: the service reads its settings from the environment just set.
        from openhands_stop.edge.app import create_app
        from openhands_stop.edge.lambda_entry import build_service
        from openhands_stop.edge.settings import Settings

        app = create_app(build_service(Settings.from_environment()))
        print(_banner(args.port, endpoint, stack.table_name, stack.queue_url), flush=True)
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


def _banner(port: int, endpoint: str, table: str, queue_url: str) -> str:
    url = f"http://localhost:{port}/api/conversations/demo-running/stop"
    return f"""
Stop route     http://localhost:{port}  (docs: http://localhost:{port}/docs)
AWS emulation  {endpoint}  table {table}, queue {queue_url}
Session key    {DEMO_SESSION_KEY}   (the emulation's own; never a real secret)
Demo           demo-running (RUNNING), demo-starting (STARTING), demo-stopped (STOPPED)

Stop the running demo conversation:
  curl -s -X POST -H 'X-Session-API-Key: {DEMO_SESSION_KEY}' {url}

Ctrl-C stops everything.
"""


if __name__ == "__main__":
    main()
