"""Test helpers that are not fixtures: the session key, counting AWS calls, reading the queue
and table, running code beside the handler in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from botocore.client import BaseClient
from botocore.retries import standard
from openhands_stop.aws.clients import USER_AGENT_EXTRA

from local.emulation import (
    AWS_DUMMY_ENV,
    DEMO_SESSION_KEY,
    FUNCTION_DIR,
    OFFLINE_FUNCTION_ENV,
    ROOT,
    Stack,
)

DEFAULT_TIERS = "not sam_build and not full"
"""The -m expression pyproject's addopts gives pytest: both long tiers left out."""

KEY = DEMO_SESSION_KEY
"""The session key the emulated stack's secret holds."""

Invoke = Callable[[dict[str, Any]], dict[str, Any]]
"""A Lambda handler bound to a context: event in, response out."""

LoadHandler = Callable[[Stack], Invoke]
"""Imports the function's handler configured for a stack (the ``lambda_handler_factory``)."""


def run_beside_handler(
    code: str, *args: str, function_env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where ``import app`` imports the handler as Lambda
    does: the function's folder as working directory and first on the path, then the layer's
    package; dummy credentials, and ``function_env`` (``OFFLINE_FUNCTION_ENV`` unless given)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join([str(FUNCTION_DIR), str(ROOT / "layers" / "common")]),
        **AWS_DUMMY_ENV,
        **(OFFLINE_FUNCTION_ENV if function_env is None else function_env),
    }
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=str(FUNCTION_DIR),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


class AwsCallCounter:
    """Counts the AWS operations the service's own clients make, by ``service.Operation``.

    Wraps botocore's ``BaseClient._make_api_call`` and counts only clients carrying our
    user-agent marker, so the test's own boto3 calls (seeding, reading the queue) do not count.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._original: Any = None

    def __enter__(self) -> AwsCallCounter:
        original = self._original = getattr(BaseClient, "_make_api_call")  # noqa: B009
        calls = self.calls

        def counting(client: BaseClient, operation: str, params: Any) -> Any:
            if getattr(client.meta.config, "user_agent_extra", None) == USER_AGENT_EXTRA:
                calls[f"{client.meta.service_model.service_name}.{operation}"] += 1
            return original(client, operation, params)

        setattr(BaseClient, "_make_api_call", counting)  # noqa: B010
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        setattr(BaseClient, "_make_api_call", self._original)  # noqa: B010

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def of(self, service: str) -> int:
        return sum(n for name, n in self.calls.items() if name.startswith(f"{service}."))


def drain_queue(stack: Stack, queue_url: str | None = None) -> list[dict[str, Any]]:
    """Every message body on the queue (received and deleted), as parsed JSON."""
    sqs = stack.client("sqs")
    url = queue_url or stack.stack_queue_url
    bodies: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def read_record(stack: Stack, conversation_id: str) -> dict[str, Any] | None:
    item = (
        stack.client("dynamodb")
        .get_item(
            TableName=stack.table_name,
            Key={"conversation_id": {"S": conversation_id}},
            ConsistentRead=True,
        )
        .get("Item")
    )
    if item is None:
        return None
    return {name: next(iter(value.values())) for name, value in item.items()}


def worst_call_seconds(config: Any, service: str) -> float:
    """The longest one call can take: every attempt times out or is throttled, each
    followed by botocore's largest backoff for that attempt (throttling: 1 s x 2**i)."""
    backoff: Any = standard.ExponentialBackoff
    attempts = config.retries["total_max_attempts"]
    per_attempt = config.connect_timeout + config.read_timeout
    scale = backoff._SERVICE_BACKOFF_CONFIG.get(service, backoff._DEFAULT_BACKOFF_CONFIG).get(
        "non_throttling_base_scale", 0.05
    )
    total = 0.0
    for i in range(attempts - 1):
        timed_out = per_attempt + scale * 2**i
        throttled = min(1.0 * 2**i, backoff._MAX_BACKOFF)
        total += max(timed_out, throttled)
    return float(total + per_attempt)
