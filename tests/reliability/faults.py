"""Fault injection at botocore's ``before-send`` hook: the request never leaves, and the
client's own retry machinery (standard mode) sees the fault exactly as it would a real one.

Only for clients talking to moto's *server* (``wire_stack``): in-process moto answers from
its own ``before-send`` handler, which would still run the operation.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from botocore.httpsession import URLLib3Session

# What a fault's message carries: internals that must never reach an HTTP body.
LEAK_MARKERS = (
    "arn:aws:",
    "123456789012",
    "Traceback",
    "botocore",
    "ProvisionedThroughputExceeded",
    "INTERNAL-DETAIL",
)
_DETAIL = "INTERNAL-DETAIL arn:aws:dynamodb:us-east-1:123456789012:table/secret-table"


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


@dataclass(frozen=True)
class Fault:
    """One way a call fails: an AWS error answer, or a read timeout."""

    name: str
    status: int = 0
    code: str = ""
    timeout: bool = False
    applied: bool = False  # the request reaches the server (and is applied) first

    def respond(self, url: str) -> AWSResponse:
        if self.timeout:
            raise ReadTimeoutError(endpoint_url=url)
        body = json.dumps({"__type": f"com.amazonaws#{self.code}", "message": _DETAIL})
        headers: Any = {"content-type": "application/x-amz-json-1.0"}
        return AWSResponse(url, self.status, headers, _Raw(body.encode()))


DYNAMODB_THROTTLING = Fault("throttling", 400, "ProvisionedThroughputExceededException")
DYNAMODB_INTERNAL = Fault("internal error", 500, "InternalServerError")
READ_TIMEOUT = Fault("read timeout", timeout=True)
APPLIED_THEN_TIMEOUT = Fault("applied, then its answer timed out", timeout=True, applied=True)
SQS_INTERNAL = Fault("internal error", 500, "InternalError")
SQS_THROTTLING = Fault("throttling", 400, "RequestThrottled")
SQS_ACCESS_DENIED = Fault("access denied", 400, "AccessDenied")
SECRETS_UNAVAILABLE = Fault("service unavailable", 503, "ServiceUnavailable")
SECRETS_INTERNAL = Fault("internal error", 500, "InternalServiceError")


@dataclass
class FaultInjector:
    """Makes ``operation`` on ``client`` fail with ``fault`` until ``clear()``.

    ``attempts`` counts the HTTP attempts botocore made (retries included).
    """

    attempts: Counter[str] = field(default_factory=Counter)
    _active: dict[str, Fault] = field(default_factory=dict)
    _remaining: dict[str, int] = field(default_factory=dict)

    def watch(self, client: Any, operation: str) -> None:
        service_id = client.meta.service_model.service_id.hyphenize()
        event = f"before-send.{service_id}.{operation}"
        client.meta.events.register_first(event, self._handler(operation))

    def fail(self, operation: str, fault: Fault, *, times: int | None = None) -> None:
        self._active[operation] = fault
        if times is not None:
            self._remaining[operation] = times

    def clear(self) -> None:
        self._active.clear()
        self._remaining.clear()

    def _handler(self, operation: str) -> Any:
        def before_send(request: Any, **_: Any) -> AWSResponse | None:
            self.attempts[operation] += 1
            fault = self._active.get(operation)
            if fault is None:
                return None
            if operation in self._remaining:
                self._remaining[operation] -= 1
                if self._remaining[operation] <= 0:
                    del self._active[operation]
                    del self._remaining[operation]
            if fault.applied:
                # The write is made; only its answer is lost, and the SDK retries it.
                URLLib3Session().send(request)
            return fault.respond(request.url)

        return before_send


def watch_service(service: Any) -> FaultInjector:
    """An injector on the three calls a stop can make: the write, the send, the key fetch."""
    injector = FaultInjector()
    injector.watch(service.table._client, "UpdateItem")
    injector.watch(service.cancels._client, "SendMessage")
    injector.watch(service.verifier._source._client, "GetSecretValue")
    return injector
