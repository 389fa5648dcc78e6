"""The FastAPI app: OpenHands' stop route and its answers, which leak nothing.

The key check (``key_guard``) and the headers (``headers``) are middleware of their own; a
new route goes here, under /api (so the guard covers it), next to ``stop_conversation``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Annotated, Any, Literal
from uuid import uuid4

from aws_lambda_powertools import Logger
from fastapi import FastAPI, Path, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import compile_path
from starlette.types import Scope

from openhands_stop.constants import SESSION_KEY_HEADER
from openhands_stop.domain import ConversationResponse, DependencyFailure
from openhands_stop.domain.confirmation import Confirmation
from openhands_stop.domain.models import CONVERSATION_ID_PATTERN
from openhands_stop.edge import observability
from openhands_stop.edge.headers import NoCacheHeaders
from openhands_stop.edge.key_guard import SessionKeyGuard
from openhands_stop.edge.service import Requester, StopService

logger = Logger(service=observability.SERVICE)

FAILED_MESSAGE = "Failed to stop conversation"
CONFIRMATION_HEADER = "X-Stop-Confirmation"
"""What a 200 says of the loop: confirmed, unconfirmed, worker-lost, not-waited or no-run."""
CONFIRMED_MS_HEADER = "X-Stop-Confirmed-Ms"
"""Milliseconds from the request to the worker's record of the loop's end (confirmed only)."""
WAITED_MS_HEADER = "X-Stop-Waited-Ms"
"""Milliseconds from the request to an answer without confirmation (unconfirmed, worker-lost)."""
_WAITED_OUT = frozenset({Confirmation.UNCONFIRMED, Confirmation.WORKER_LOST})
REASON_HEADER = "X-Stop-Reason"
REASON_MAX = 200
USER_AGENT_MAX = 256
STOP_PATH = "/api/conversations/{conversation_id}/stop"

SESSION_KEY_SCHEME_NAME = "APIKeyHeader"
SESSION_KEY_SCHEME: dict[str, str] = {"type": "apiKey", "in": "header", "name": SESSION_KEY_HEADER}
"""The OpenAPI security scheme of the key, as OpenHands' document names and describes it."""


class Unauthorized(BaseModel):
    detail: str


# The 500/503 body, key for key as OpenHands' route answers a failed stop: status,
# conversation_id, message, and nothing else (no conversation_status: none is known).
class StopFailed(BaseModel):
    model_config = ConfigDict(title="StopFailed")

    status: Literal["error"] = Field(title="Status")
    conversation_id: str = Field(title="Conversation Id")
    message: str = Field(title="Message")


_UNAUTHORIZED_BODY = b'{"detail":"Unauthorized"}'

_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Unauthorized, "description": "Missing or wrong X-Session-API-Key"},
    500: {"model": StopFailed, "description": "Stopping failed; retrying will not help"},
    503: {
        "model": StopFailed,
        "description": "A dependency is throttled or unavailable; retry after Retry-After",
        "headers": {
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
        },
    },
}


def _requester(request: Request) -> Requester:
    """Who asked, for the audit trail: the address API Gateway saw (Mangum's ``client``),
    the user agent, and the optional reason, each printable and bounded."""
    client = request.client
    return Requester(
        source_ip=_printable(client.host if client else None, 64),
        user_agent=_printable(request.headers.get("user-agent"), USER_AGENT_MAX),
        reason=_printable(request.headers.get(REASON_HEADER), REASON_MAX),
    )


def _printable(text: str | None, limit: int) -> str | None:
    """``text`` with anything unprintable (newlines, controls) replaced, cut to ``limit``;
    ``None`` when nothing is left. It reaches the row, the cancel and the log as data."""
    if not text:
        return None
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text[:limit]).strip()
    return cleaned or None


def _request_ids(scope: Scope) -> tuple[str, str | None]:
    """The request's id for logs, and the Lambda invocation's (the same id) when on Lambda."""
    lambda_request_id = getattr(scope.get("aws.context"), "aws_request_id", None)
    if isinstance(lambda_request_id, str):
        return lambda_request_id, lambda_request_id
    return uuid4().hex, None


_STOP_PATH_REGEX = compile_path(STOP_PATH)[0]


def _unauthorized(scope: Scope) -> Response:
    observability.record_unauthorized(*_request_ids(scope), _conversation_id(scope))
    return Response(_UNAUTHORIZED_BODY, status_code=401, media_type="application/json")


def _conversation_id(scope: Scope) -> str | None:
    """The id in a stop's path, for the line of a refused request (not routed yet)."""
    match = _STOP_PATH_REGEX.match(scope["path"])
    return match["conversation_id"] if match else None


def create_app(service: StopService, *, serve_docs: bool = True) -> FastAPI:
    """The app. ``serve_docs=False`` (the Lambda) leaves out /docs, /redoc and /openapi.json:
    API Gateway routes only the stop there, and the router would try each before it."""
    app = FastAPI(
        openapi_url="/openapi.json" if serve_docs else None,
        docs_url="/docs" if serve_docs else None,
        redoc_url="/redoc" if serve_docs else None,
        title="OpenHands",
        description="OpenHands: Code Less, Make More",
        version="0.53.0",
        servers=[{"url": "http://localhost:3000", "description": "Local development server"}],
        # No OpenTelemetry here (logs and metrics are the request's line, traces X-Ray's):
        # off, FastAPI skips looking up OTel providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # A path with a trailing slash is not the route: 404, never a 307 whose Location
        # Starlette would build from the caller's Host and X-Forwarded-Proto headers.
        redirect_slashes=False,
    )
    # Outermost first: every answer gets the headers, the guard's own included.
    app.add_middleware(
        SessionKeyGuard,
        verifier=service.verifier,
        refused=_unauthorized,
        unavailable=lambda scope, failure: _failure(
            _conversation_id(scope) or "",
            failure,
            _request_ids(scope),
            service.retry_after_seconds,
        ),
    )
    app.add_middleware(NoCacheHeaders)
    _declare_session_key(app)

    @app.post(
        STOP_PATH,
        response_model=ConversationResponse,
        responses=_RESPONSES,
        openapi_extra={"security": [{SESSION_KEY_SCHEME_NAME: []}]},
    )
    async def stop_conversation(
        request: Request,
        conversation_id: Annotated[
            str,
            Path(
                title="Conversation Id",
                min_length=1,
                max_length=128,
                pattern=CONVERSATION_ID_PATTERN,
            ),
        ],
    ) -> Response:
        """Stop an agent loop for a conversation.

        This endpoint calls the conversation_manager's close_session method
        to stop a conversation.
        """
        started = time.monotonic()
        request_id, lambda_request_id = _request_ids(request.scope)
        requester = _requester(request)
        try:
            result = service.stop(conversation_id, request_id, requester)
            confirmation = await service.confirm(result, started)
        except DependencyFailure as failure:
            ids = (request_id, lambda_request_id)
            return _failure(conversation_id, failure, ids, service.retry_after_seconds)
        except Exception:  # every other fault still answers, without its text
            logger.exception("stop failed", conversation_id=conversation_id, request_id=request_id)
            return _error_response(conversation_id, 500)
        observability.record_stop(result, request_id, lambda_request_id, confirmation, requester)
        if confirmation.outcome is Confirmation.WORKER_LOST:
            # Its worker is dead: as OpenHands answers for a session that no longer runs.
            result = replace(result, previous_status=None)
        response = Response(result.response().model_dump_json(), media_type="application/json")
        response.headers[CONFIRMATION_HEADER] = confirmation.outcome.value
        if confirmation.outcome is Confirmation.CONFIRMED:
            response.headers[CONFIRMED_MS_HEADER] = str(round(confirmation.waited_seconds * 1000))
        elif confirmation.outcome in _WAITED_OUT:
            response.headers[WAITED_MS_HEADER] = str(round(confirmation.waited_seconds * 1000))
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        observability.record_invalid_request(*_request_ids(request.scope))
        return await request_validation_exception_handler(request, error)

    return app


def _declare_session_key(app: FastAPI) -> None:
    """Put the key's security scheme in the OpenAPI document: FastAPI documents the schemes
    of dependencies, and the key is checked by ``SessionKeyGuard`` instead (the route
    declares that it needs the scheme with ``openapi_extra``)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            schemes = document.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes[SESSION_KEY_SCHEME_NAME] = dict(SESSION_KEY_SCHEME)
        return app.openapi_schema  # type: ignore[return-value]  # set by generate()

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point


def _failure(
    conversation_id: str,
    failure: DependencyFailure,
    request_ids: tuple[str, str | None],
    retry_after_seconds: int,
) -> Response:
    status = 503 if failure.transient else 500
    observability.record_dependency_failure(failure, *request_ids, conversation_id, status)
    response = _error_response(conversation_id, status)
    if failure.transient:
        response.headers["Retry-After"] = str(retry_after_seconds)
    return response


def _error_response(conversation_id: str, status: int) -> JSONResponse:
    body = StopFailed(status="error", conversation_id=conversation_id, message=FAILED_MESSAGE)
    return JSONResponse(body.model_dump(mode="json"), status_code=status)
