"""Test helpers that are not fixtures: counting AWS calls, reading the queue and table."""

from __future__ import annotations

import json
from collections import Counter
from types import TracebackType
from typing import Any

from botocore.client import BaseClient
from openhands_stop.aws.clients import USER_AGENT_EXTRA

from local.emulation import Stack


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
    url = queue_url or stack.queue_url
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
