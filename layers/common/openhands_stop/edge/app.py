"""The FastAPI app: OpenHands' stop route, its key check, and answers that leak nothing."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import uuid4

from aws_lambda_powertools import Logger
from fastapi import Depends, FastAPI, Path, Request, Security
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
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

session_key_header = APIKeyHeader(name=SESSION_KEY_HEADER, auto_error=False)


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


def _service(request: Request) -> StopService:
    service: StopService = request.app.state.stop_service
    return service


def _request_id(request: Request) -> str:
    context = request.scope.get("aws.context")
    request_id = getattr(context, "aws_request_id", None)
    return request_id if isinstance(request_id, str) else uuid4().hex


async def require_session_key(
    request: Request,
    presented: Annotated[str | None, Security(session_key_header)],
) -> None:
    """Runs before the path is validated, so an unauthenticated caller learns nothing."""
    if not _service(request).verifier.verify(presented):
        raise _Unauthorized


def create_app(service: StopService) -> FastAPI:
    app = FastAPI(
        title="OpenHands",
        description="OpenHands: Code Less, Make More",
        version="0.53.0",
        servers=[{"url": "http://localhost:3000", "description": "Local development server"}],
    )
    app.state.stop_service = service

    @app.post(
        "/api/conversations/{conversation_id}/stop",
        response_model=ConversationResponse,
        responses=_RESPONSES,
        dependencies=[Depends(require_session_key)],
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
        request_id = _request_id(request)
        try:
            result = _service(request).stop(conversation_id, request_id)
        except DependencyFailure as failure:
            return _failure(request, conversation_id, request_id, failure)
        except Exception:  # every other fault still answers, without its text
            logger.exception("stop failed", conversation_id=conversation_id, request_id=request_id)
            return _error_response(conversation_id, 500)
        body = result.response()
        observability.record_stop(result)
        logger.info(
            "stop",
            conversation_id=conversation_id,
            request_id=request_id,
            outcome="stopped" if result.previous_status else "not_running",
            previous_status=result.previous_status,
            cancel_sent=result.cancel_sent,
        )
        return Response(content=body.model_dump_json(), media_type="application/json")

    @app.exception_handler(_Unauthorized)
    async def unauthorized(request: Request, _: Exception) -> Response:
        observability.record_unauthorized()
        logger.info(
            "unauthorized",
            conversation_id=request.path_params.get("conversation_id"),
            request_id=_request_id(request),
        )
        return Response(_UNAUTHORIZED_BODY, status_code=401, media_type="application/json")

    @app.exception_handler(DependencyFailure)
    async def dependency_failure(request: Request, failure: Exception) -> Response:
        assert isinstance(failure, DependencyFailure)
        conversation_id = str(request.path_params.get("conversation_id", ""))
        return _failure(request, conversation_id, _request_id(request), failure)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        logger.info("invalid request", request_id=_request_id(request), status_code=422)
        return await request_validation_exception_handler(request, error)

    return app


def _failure(
    request: Request, conversation_id: str, request_id: str, failure: DependencyFailure
) -> Response:
    status = 503 if failure.transient else 500
    observability.record_dependency_failure(failure)
    logger.error(
        "stop failed",
        conversation_id=conversation_id,
        request_id=request_id,
        dependency=failure.dependency,
        transient=failure.transient,
        status_code=status,
        detail=str(failure),
        cause=repr(failure.__cause__),
    )
    response = _error_response(conversation_id, status)
    if failure.transient:
        response.headers["Retry-After"] = str(_service(request).retry_after_seconds)
    return response


def _error_response(conversation_id: str, status: int) -> JSONResponse:
    body = ConversationResponse(
        status="error", conversation_id=conversation_id, message=FAILED_MESSAGE
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=status)
