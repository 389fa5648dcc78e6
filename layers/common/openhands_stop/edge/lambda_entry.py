"""Builds the Lambda handler from the environment: every collaborator made once per process."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from mangum import Mangum

from openhands_stop.aws.cancel_queue import SqsCancelQueue
from openhands_stop.aws.clients import dynamodb_client, secretsmanager_client, sqs_client
from openhands_stop.aws.conversation_table import DynamoConversationTable
from openhands_stop.aws.session_key import SecretsManagerKeySource
from openhands_stop.edge.app import create_app, logger
from openhands_stop.edge.service import StopService
from openhands_stop.edge.session_key import SessionKeyVerifier
from openhands_stop.edge.settings import Settings

LambdaHandler = Any


def build_service(settings: Settings) -> StopService:
    """Clients are made here, not on the first request; nothing here touches the network."""
    verifier = SessionKeyVerifier(
        SecretsManagerKeySource(secretsmanager_client(), settings.session_key_secret_id),
        cache_seconds=settings.key_cache_seconds,
        refresh_min_seconds=settings.key_refresh_min_seconds,
        max_stale_seconds=settings.key_max_stale_seconds,
        previous_grace=timedelta(seconds=settings.previous_key_grace_seconds),
    )
    return StopService(
        verifier=verifier,
        table=DynamoConversationTable(dynamodb_client(), settings.table_name),
        cancels=SqsCancelQueue(sqs_client(), settings.cancel_queue_url),
        resend_window=settings.cancel_resend_window,
        retry_after_seconds=settings.retry_after_seconds,
    )


def build_handler(settings: Settings | None = None) -> LambdaHandler:
    service = build_service(settings or Settings.from_environment())
    asgi = Mangum(create_app(service), lifespan="off")

    # log_event pinned off: POWERTOOLS_LOGGER_LOG_EVENT=true would log X-Session-API-Key.
    @logger.inject_lambda_context(clear_state=True, log_event=False)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        response: dict[str, Any] = asgi(event, context)
        return response

    return handler
