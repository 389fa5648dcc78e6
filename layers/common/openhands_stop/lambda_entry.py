"""The Lambda entry: API Gateway and Function URL events through Mangum to the app.

Its one job is adapting Lambda to the ASGI app: reading events (and refusing ones no API
Gateway sends), Lambda's cold-start concerns (``pydantic.v1``, SnapStart), and the handler.
It composes, beside ``wiring``: the service comes from ``wiring.build_service``, the app from
``edge.app`` (the layers: README.md, tests/test_dependencies.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cached_property
from typing import Any

from mangum import Mangum
from mangum.handlers import HTTPGateway
from mangum.types import Scope

from openhands_stop.edge import observability
from openhands_stop.edge.app import create_app, logger
from openhands_stop.edge.settings import RouteSettings
from openhands_stop.wiring import build_service

LambdaHandler = Any

BAD_REQUEST_BODY = '{"detail":"Bad Request"}'
"""The answer to input no API Gateway sends (an unknown shape, a field of the wrong type)."""

MALFORMED_EVENT_RESPONSE: dict[str, Any] = {
    "statusCode": 400,
    "headers": {"content-type": "application/json"},
    "body": BAD_REQUEST_BODY,
    "isBase64Encoded": False,
}


class _HttpApiEvent(HTTPGateway):
    """Mangum's handler for HTTP API and Function URL events, building the ASGI scope once.

    Mangum's ``HTTPGateway`` builds an event's scope (headers re-encoded, the path stripped)
    for the app, and reads ``scope`` again after the response for the payload version: here
    that read is the first one's result. Tried before Mangum's own handlers, it takes the
    events they would give HTTPGateway (those with ``version`` and ``requestContext``);
    tests/test_events.py counts the builds for each event shape.
    """

    @cached_property
    def scope(self) -> Scope:
        scope: Scope = super().scope
        return scope


class _RejectUnreadableRequest:
    """Answers 400 to a request whose method or path is not a string.

    Mangum copies an event's method into the ASGI scope without checking its type; a list
    or an object there makes Starlette's router raise, which would be a 500 for bad input.
    """

    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and not (
            isinstance(scope.get("method"), str) and isinstance(scope.get("path"), str)
        ):
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": BAD_REQUEST_BODY.encode()})
            return
        await self._app(scope, receive, send)


def skip_pydantic_v1() -> None:
    """Refuse ``pydantic.v1`` in this process, unless something already imported it.

    FastAPI imports it (a cost of every cold start: docs/performance.md) while it builds a
    route, only to check that none of the route's types is a pydantic v1 model, which it does
    not support. None of ours is, and nothing in the layer uses v1: with the import refused,
    FastAPI's check answers "not v1" at once, as it does wherever ``pydantic.v1`` is absent
    (tests/test_import_budget.py forbids the import).
    """
    sys.modules.setdefault("pydantic.v1", None)  # type: ignore[arg-type]


def build_handler(settings: RouteSettings | None = None) -> LambdaHandler:
    service = build_service(settings or RouteSettings.from_environment())
    skip_pydantic_v1()
    asgi = Mangum(
        _RejectUnreadableRequest(create_app(service, serve_docs=False)),
        lifespan="off",
        custom_handlers=[_HttpApiEvent],
    )

    # No logger.inject_lambda_context: the request's line (observability) carries the Lambda
    # request id and cold start itself, so it would cost every warm request for nothing
    # (docs/performance.md); and without it POWERTOOLS_LOGGER_LOG_EVENT cannot log an event
    # (and the X-Session-API-Key in it).
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = asgi(event, context)
        except Exception:
            # Mangum answers the app's own faults itself (500); what escapes it is an event
            # it cannot read (unknown shape, wrong-typed field): the caller's fault, not ours.
            # Nothing of the event is logged: it may carry the session key.
            logger.warning(
                "malformed event",
                event_type=type(event).__name__,
                function_request_id=getattr(context, "aws_request_id", None),
            )
            return dict(MALFORMED_EVENT_RESPONSE)
        return response

    after_snapstart_restore(service.verifier.forget)
    return observability.instrument(handler)


def after_snapstart_restore(hook: Callable[[], None]) -> bool:
    """Run ``hook`` when Lambda resumes this process from a SnapStart snapshot.

    The snapshot was taken after init, possibly long before: a key cached then may have been
    rotated since, and its cache timestamps came from another machine's clock. Nothing else
    needs refreshing: init makes no AWS call (no pooled connection to go stale), SnapStart
    functions get credentials from the container credentials endpoint, which botocore
    refreshes itself, and stop ids come from ``os.urandom``, unique after a restore.
    Returns False where the runtime has no SnapStart hooks (not on Lambda).
    """
    try:
        from snapshot_restore_py import (  # type: ignore[import-not-found]  # noqa: PLC0415
            register_after_restore,
        )
    except ImportError:
        return False
    register_after_restore(hook)
    return True
