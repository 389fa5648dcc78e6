"""One JSON line per request, both its log line and its EMF metrics; X-Ray only when enabled.

CloudWatch extracts metrics from any log line in Embedded Metric Format (EMF) and keeps the
line's other properties searchable, so the request's log line (level, message, request and
conversation ids, outcome) carries its metrics too: no AWS call, one write. The line is built
as a dict and serialized once, straight to stdout. Powertools' Logger and Metrics are a large
part of a warm request's own time (docs/performance.md), so they stay off this path; the
Logger still writes the rare lines (unexpected faults, unreadable events).

The line is written whatever ``POWERTOOLS_LOG_LEVEL`` says: it carries the metrics.

Nothing here sees the session key: a line carries ids, an outcome, counts and, for AWS
failures, the dependency's name and the error's text.

The X-Ray SDK is imported only when ``POWERTOOLS_TRACE_DISABLED`` is explicitly false (the
template's tracing parameter): importing it and patching botocore costs cold-start time that
a deployment without tracing should not pay.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Any

from openhands_stop.domain import DependencyFailure
from openhands_stop.domain.close_session import StopResult
from openhands_stop.domain.confirmation import Confirmation, StopConfirmation

if TYPE_CHECKING:
    from openhands_stop.edge.service import Requester

SERVICE = "stop-conversation"
"""The service's name: the ``service`` of every line and the metrics' one dimension."""
DEFAULT_NAMESPACE = "OpenHands/StopConversation"
TRACE_DISABLED_ENV = "POWERTOOLS_TRACE_DISABLED"

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


class Metric(StrEnum):
    """The metrics' names (the template's alarms and docs/operations.md refer to these)."""

    CONVERSATION_STOPPED = "ConversationStopped"
    CONVERSATION_NOT_RUNNING = "ConversationNotRunning"
    CANCEL_RESENT = "CancelResent"
    UNAUTHORIZED = "Unauthorized"
    DEPENDENCY_FAILURE = "DependencyFailure"
    STOP_CONFIRMED = "StopConfirmed"
    STOP_UNCONFIRMED = "StopUnconfirmed"
    STOP_WORKER_LOST = "StopWorkerLost"


_STOPPED = (Metric.CONVERSATION_STOPPED,)
_NOT_RUNNING = (Metric.CONVERSATION_NOT_RUNNING,)
_RESENT = (Metric.CONVERSATION_NOT_RUNNING, Metric.CANCEL_RESENT)
_UNAUTHORIZED = (Metric.UNAUTHORIZED,)
_DEPENDENCY_FAILURE = (Metric.DEPENDENCY_FAILURE,)

# Our lines are flat dicts we build ourselves: no cycles to watch for.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str, check_circular=False)
_cold_start = [True]  # until the process's first request line is written
_identity = {"service": SERVICE, "namespace": DEFAULT_NAMESPACE}


def configure(service: str, namespace: str) -> None:
    """Name the service and the metrics' namespace, once, at init (``wiring.build_service``,
    from the settings): nothing is read from the environment per request."""
    _identity["service"] = service
    _identity["namespace"] = namespace


_CONFIRMATION_METRICS: dict[Confirmation, tuple[Metric, ...]] = {
    Confirmation.CONFIRMED: (Metric.CONVERSATION_STOPPED, Metric.STOP_CONFIRMED),
    Confirmation.UNCONFIRMED: (Metric.CONVERSATION_STOPPED, Metric.STOP_UNCONFIRMED),
    Confirmation.WORKER_LOST: (Metric.CONVERSATION_STOPPED, Metric.STOP_WORKER_LOST),
}


def record_stop(
    result: StopResult,
    request_id: str,
    lambda_request_id: str | None,
    confirmation: StopConfirmation | None = None,
    requester: Requester | None = None,
) -> None:
    """A stop answered 200: this call recorded the stop and sent its cancel (its loop's end
    confirmed or not, with a wait), or the conversation was not running (and the recorded
    stop's cancel was sent again when this is a retry within the resend window). Who asked
    is on the line too: address, user agent, reason; never the key."""
    metrics: tuple[Metric, ...]
    outcome_of_wait = confirmation.outcome if confirmation else Confirmation.NOT_WAITED
    if result.previous_status is not None:
        metrics, outcome = _CONFIRMATION_METRICS.get(outcome_of_wait, _STOPPED), "stopped"
    else:
        metrics, outcome = (_RESENT if result.cancel_sent else _NOT_RUNNING), "not_running"
    fields: dict[str, object] = {}
    if confirmation is not None and confirmation.reads:
        fields["confirmation_ms"] = round(confirmation.waited_seconds * 1000, 1)
        fields["confirmation_reads"] = confirmation.reads
        fields["loop_stopped_via"] = confirmation.loop_stopped_via
    if requester is not None:
        fields["source_ip"] = requester.source_ip
        fields["user_agent"] = requester.user_agent
        fields["reason"] = requester.reason
    _write(
        "INFO",
        "stop",
        metrics,
        request_id,
        lambda_request_id,
        conversation_id=result.conversation_id,
        outcome=outcome,
        previous_status=result.previous_status,
        cancel_sent=result.cancel_sent,
        confirmation=outcome_of_wait,
        **fields,
    )


def record_unauthorized(
    request_id: str, lambda_request_id: str | None, conversation_id: object
) -> None:
    _write(
        "INFO",
        "unauthorized",
        _UNAUTHORIZED,
        request_id,
        lambda_request_id,
        conversation_id=conversation_id,
        outcome="unauthorized",
        status_code=401,
    )


def record_dependency_failure(
    failure: DependencyFailure,
    request_id: str,
    lambda_request_id: str | None,
    conversation_id: str,
    status_code: int,
) -> None:
    """Which AWS call failed is a property of the line (searchable in Logs Insights), not a
    dimension, so the alarmable metric stays a single series."""
    _write(
        "ERROR",
        "stop failed",
        _DEPENDENCY_FAILURE,
        request_id,
        lambda_request_id,
        conversation_id=conversation_id,
        outcome="dependency_failure",
        status_code=status_code,
        dependency=failure.dependency,
        transient=failure.transient,
        detail=str(failure),
        cause=repr(failure.__cause__),
    )


def record_invalid_request(request_id: str, lambda_request_id: str | None) -> None:
    """A 422 is the caller's fault: logged, not counted."""
    _write(
        "INFO",
        "invalid request",
        (),
        request_id,
        lambda_request_id,
        outcome="invalid_request",
        status_code=422,
    )


def _write(
    level: str,
    message: str,
    metrics: tuple[Metric, ...],
    request_id: str,
    lambda_request_id: str | None,
    **fields: object,
) -> None:
    line: dict[str, object] = {"level": level, "message": message, "service": _identity["service"]}
    if metrics:
        line["_aws"] = {
            "Timestamp": time.time_ns() // 1_000_000,
            "CloudWatchMetrics": _directive(_identity["namespace"], metrics),
        }
        for metric in metrics:
            line[metric.value] = 1
    line["request_id"] = request_id
    line.update(fields)
    line["cold_start"] = _cold_start[0]
    _cold_start[0] = False
    if lambda_request_id is not None:  # Powertools' name for it, as on its own lines
        line["function_request_id"] = lambda_request_id
    stdout = sys.stdout
    stdout.write(_ENCODER.encode(line) + "\n")
    stdout.flush()


@cache
def _directive(namespace: str, metrics: tuple[Metric, ...]) -> list[dict[str, object]]:
    """The EMF directive for a set of metrics, made once (a handful of sets exist)."""
    return [
        {
            "Namespace": namespace,
            "Dimensions": [["service"]],
            "Metrics": [{"Name": metric.value, "Unit": "Count"} for metric in metrics],
        }
    ]


def tracing_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Only an explicit ``false`` turns tracing on: unset (tests, local runs) means off."""
    value = (os.environ if environ is None else environ).get(TRACE_DISABLED_ENV, "true")
    return value.strip().lower() in {"false", "0", "no", "off"}


def instrument(handler: Handler) -> Handler:
    """The handler, traced when tracing is on; itself otherwise (nothing to pay per request)."""
    return _traced(handler) if tracing_enabled() else handler


def _traced(handler: Handler) -> Handler:
    # Imported here: Tracer patches botocore and loads the X-Ray SDK, which only a traced
    # deployment should pay for. Responses are not captured (they are not needed to debug
    # a stop, and keep traces small).
    from aws_lambda_powertools import Tracer  # noqa: PLC0415 - only a traced deployment loads it

    tracer = Tracer(service=_identity["service"])
    traced: Handler = tracer.capture_lambda_handler(handler, capture_response=False)
    return traced
