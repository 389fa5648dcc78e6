"""``make invoke EVENT=events/x.json``: a Docker-free ``sam local invoke``.

Runs one sample event through the real handler (``functions/stop_conversation/app.py``,
imported with its CodeUri on ``sys.path`` as Lambda does) against a fresh embedded AWS
emulation seeded with the demo conversations, and prints the Lambda response.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.emulation import FUNCTION_DIR, Stack, create_stack, moto_server, seed


@dataclass(frozen=True)
class LambdaContext:
    """The few attributes of Lambda's context object that the handler and Powertools read."""

    aws_request_id: str = "local-invoke-request"
    function_name: str = "StopConversationFunction"
    function_version: str = "$LATEST"
    invoked_function_arn: str = (
        "arn:aws:lambda:us-east-1:123456789012:function:StopConversationFunction"
    )
    memory_limit_in_mb: int = 512


def load_handler() -> Any:
    """Import the handler as Lambda would: its CodeUri first on ``sys.path``, module ``app``."""
    if str(FUNCTION_DIR) not in sys.path:
        sys.path.insert(0, str(FUNCTION_DIR))
    module = importlib.import_module("app")
    return module.handler


def invoke(event: dict[str, Any], stack: Stack) -> dict[str, Any]:
    os.environ.update(stack.function_environment())
    response: dict[str, Any] = load_handler()(event, LambdaContext())
    return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "event", type=Path, help="an API Gateway event, e.g. events/stop-running.json"
    )
    args = parser.parse_args()
    event = json.loads(args.event.read_text(encoding="utf-8"))
    with moto_server() as endpoint:
        stack = create_stack(endpoint)
        seed(stack)
        response = invoke(event, stack)
        messages = (
            stack.client("sqs")
            .receive_message(QueueUrl=stack.stack_queue_url, MaxNumberOfMessages=10)
            .get("Messages", [])
        )
    print(json.dumps(response, indent=2))
    print(f"cancel messages on the queue: {len(messages)}", file=sys.stderr)
    for message in messages:
        print(f"  {message['Body']}", file=sys.stderr)


if __name__ == "__main__":
    main()
