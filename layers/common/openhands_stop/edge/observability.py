"""EMF metrics for each stop outcome, and X-Ray tracing only when the deployer turned it on.

Metrics are CloudWatch Embedded Metric Format lines on stdout, so emitting one costs no AWS
call: Lambda ships the log line and CloudWatch extracts the metric. They are buffered during
an invocation and flushed once at its end by the wrapper ``instrument`` returns.

Nothing here sees the session key: a metric carries a count, the request id and, for AWS
failures, the dependency's name.

The X-Ray SDK is imported only when ``POWERTOOLS_TRACE_DISABLED`` is explicitly false (the
template's tracing parameter): importing it and patching botocore costs cold-start time that
a deployment without tracing should not pay.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from enum import StrEnum
from functools import wraps
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from openhands_stop.domain import DependencyFailure
from openhands_stop.domain.close_session import StopResult

SERVICE = "stop-conversation"
NAMESPACE_ENV = "POWERTOOLS_METRICS_NAMESPACE"
DEFAULT_NAMESPACE = "OpenHands/StopConversation"
TRACE_DISABLED_ENV = "POWERTOOLS_TRACE_DISABLED"

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


class Metric(StrEnum):
    """The metrics' names (the template's alarms and the README refer to these)."""

    CONVERSATION_STOPPED = "ConversationStopped"
    CONVERSATION_NOT_RUNNING = "ConversationNotRunning"
    CANCEL_RESENT = "CancelResent"
    UNAUTHORIZED = "Unauthorized"
    DEPENDENCY_FAILURE = "DependencyFailure"


_metrics: Metrics | None = None


def metrics() -> Metrics:
    """The process's Metrics, made on first use so the namespace comes from the environment
    the function was configured with (Powertools shares the buffer between instances)."""
    global _metrics  # noqa: PLW0603 - one per process, made lazily on purpose
    if _metrics is None:
        _metrics = Metrics(
            service=os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE),
            namespace=os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE,
        )
    return _metrics


def _count(metric: Metric) -> None:
    metrics().add_metric(name=metric.value, unit=MetricUnit.Count, value=1)


def record_stop(result: StopResult) -> None:
    """A stop answered 200: the loop was stopped now, or was not running (and maybe the
    recorded stop's cancel was sent again because the stop was retried)."""
    if result.previous_status is not None:
        _count(Metric.CONVERSATION_STOPPED)
        return
    _count(Metric.CONVERSATION_NOT_RUNNING)
    if result.cancel_sent:
        _count(Metric.CANCEL_RESENT)


def record_unauthorized() -> None:
    _count(Metric.UNAUTHORIZED)


def record_dependency_failure(failure: DependencyFailure) -> None:
    """An AWS call failed; which one goes in the EMF line's metadata (searchable in Logs
    Insights) rather than a dimension, so the alarmable metric stays a single series."""
    _count(Metric.DEPENDENCY_FAILURE)
    metrics().add_metadata(key="dependency", value=failure.dependency)
    metrics().add_metadata(key="transient", value=failure.transient)


def flush() -> None:
    """Print the invocation's metrics as one EMF line; nothing when there are none."""
    buffered = metrics()
    if buffered.metric_set:
        buffered.flush_metrics()
    else:
        buffered.clear_metrics()  # drops metadata an invocation without metrics may have set


def tracing_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Only an explicit ``false`` turns tracing on: unset (tests, local runs) means off."""
    value = (os.environ if environ is None else environ).get(TRACE_DISABLED_ENV, "true")
    return value.strip().lower() in {"false", "0", "no", "off"}


def instrument(handler: Handler) -> Handler:
    """The handler, flushing metrics after every invocation, traced when tracing is on."""
    traced = _traced(handler) if tracing_enabled() else handler

    @wraps(handler)
    def instrumented(event: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            return traced(event, context)
        finally:
            flush()

    return instrumented


def _traced(handler: Handler) -> Handler:
    # Imported here: Tracer patches botocore and loads the X-Ray SDK, which only a traced
    # deployment should pay for. Responses are not captured (they are not needed to debug
    # a stop, and keep traces small).
    from aws_lambda_powertools import Tracer  # noqa: PLC0415 - only a traced deployment loads it

    tracer = Tracer(service=os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE))
    traced: Handler = tracer.capture_lambda_handler(handler, capture_response=False)
    return traced
