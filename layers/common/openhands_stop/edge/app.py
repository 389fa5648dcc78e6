"""The FastAPI app: OpenHands' stop route, its key check, and answers that leak nothing."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import uuid4

from aws_lambda_powertools import Logger
from fastapi import FastAPI, Path, Request, Security
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.requests import HTTPConnection
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel

from openhands_stop.domain import ConversationResponse, DependencyFailure
from openhands_stop.domain.models import CONVERSATION_ID_PATTERN
from openhands_stop.edge import observability
from openhands_stop.edge.service import StopService

logger = Logger(service="stop-conversation")

FAILED_MESSAGE = "Failed to stop conversation"
SESSION_KEY_HEADER = "X-Session-API-Key"


class Unauthorized(BaseModel):
    detail: str


_UNAUTHORIZED_BODY = b'{"detail":"Unauthorized"}'

_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Unauthorized, "description": "Missing or wrong X-Session-API-Key"},
    500: {"model": ConversationResponse, "description": "Stopping failed; retrying will not help"},
    503: {
        "model": ConversationResponse,
        "description": "A dependency is throttled or unavailable; retry after Retry-After",
        "headers": {
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
        },
    },
}


class _Unauthorized(Exception):
    pass


def _request_ids(request: Request) -> tuple[str, str | None]:
    """The request's id for logs, and the Lambda invocation's (the same id) when on Lambda."""
    lambda_request_id = getattr(request.scope.get("aws.context"), "aws_request_id", None)
    if isinstance(lambda_request_id, str):
        return lambda_request_id, lambda_request_id
    return uuid4().hex, None


class SessionKeyCheck(APIKeyHeader):
    """The X-Session-API-Key scheme of the OpenAPI document, and its check in one step.

    Route dependencies run before the path is validated, so an unauthenticated caller is
    refused (401) before learning anything about its path (422). Reading the header here,
    rather than depending on a separate APIKeyHeader dependency, spares FastAPI a level of
    dependency solving on every request.
    """

    def __init__(self, service: StopService) -> None:
        super().__init__(name=SESSION_KEY_HEADER, scheme_name="APIKeyHeader", auto_error=False)
        self._service = service

    async def __call__(self, request: HTTPConnection) -> None:
        if not self._service.verifier.verify(request.headers.get(SESSION_KEY_HEADER)):
            raise _Unauthorized


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
    )

    @app.post(
        "/api/conversations/{conversation_id}/stop",
        response_model=ConversationResponse,
        responses=_RESPONSES,
        dependencies=[Security(SessionKeyCheck(service))],
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
        request_id, lambda_request_id = _request_ids(request)
        try:
            result = service.stop(conversation_id, request_id)
        except DependencyFailure as failure:
            ids = (request_id, lambda_request_id)
            return _failure(conversation_id, failure, ids, service.retry_after_seconds)
        except Exception:  # every other fault still answers, without its text
            logger.exception("stop failed", conversation_id=conversation_id, request_id=request_id)
            return _error_response(conversation_id, 500)
        observability.record_stop(result, request_id, lambda_request_id)
        return Response(result.response().model_dump_json(), media_type="application/json")

    @app.exception_handler(_Unauthorized)
    async def unauthorized(request: Request, _: Exception) -> Response:
        observability.record_unauthorized(
            *_request_ids(request), request.path_params.get("conversation_id")
        )
        return Response(_UNAUTHORIZED_BODY, status_code=401, media_type="application/json")

    @app.exception_handler(DependencyFailure)
    async def dependency_failure(request: Request, failure: Exception) -> Response:
        assert isinstance(failure, DependencyFailure)
        conversation_id = str(request.path_params.get("conversation_id", ""))
        ids = _request_ids(request)
        return _failure(conversation_id, failure, ids, service.retry_after_seconds)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        observability.record_invalid_request(*_request_ids(request))
        return await request_validation_exception_handler(request, error)

    return app


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
    body = ConversationResponse(
        status="error", conversation_id=conversation_id, message=FAILED_MESSAGE
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=status)
