"""The one place that builds the product from its settings: the stop service and its parts.

Nothing here imports the web stack (FastAPI, Mangum): an event source other than HTTP, a
script, or a test can have the service without them. Clients are made here, once per
process, and nothing here touches the network.
"""

from __future__ import annotations

from datetime import timedelta

from openhands_stop.aws.cancel_queue import CancelDestinations, SqsCancelQueue
from openhands_stop.aws.clients import dynamodb_client, secretsmanager_client, sqs_client
from openhands_stop.aws.conversation_table import DynamoConversationTable
from openhands_stop.aws.run_ends import DynamoRunEnds
from openhands_stop.aws.session_key import SecretsManagerKeySource
from openhands_stop.edge import observability
from openhands_stop.edge.service import StopService
from openhands_stop.edge.session_key import SessionKeyVerifier
from openhands_stop.edge.settings import RouteSettings


def build_service(settings: RouteSettings) -> StopService:
    """The stop route's collaborators: the key check, the table, the cancel queues."""
    observability.configure(settings.service_name, settings.metrics_namespace)
    verifier = SessionKeyVerifier(
        SecretsManagerKeySource(secretsmanager_client(), settings.session_key_secret_id),
        cache_seconds=settings.key_cache_seconds,
        refresh_min_seconds=settings.key_refresh_min_seconds,
        max_stale_seconds=settings.key_max_stale_seconds,
        previous_grace=timedelta(seconds=settings.previous_key_grace_seconds),
    )
    dynamodb = dynamodb_client()
    return StopService(
        verifier=verifier,
        table=DynamoConversationTable(dynamodb, settings.table_name),
        cancels=SqsCancelQueue(
            sqs_client(),
            CancelDestinations(
                settings.stack_queue_url, worker_queue_prefix=settings.worker_queue_prefix
            ),
        ),
        resend_window=settings.cancel_resend_window,
        retry_after_seconds=settings.retry_after_seconds,
        run_ends=DynamoRunEnds(dynamodb, settings.table_name)
        if settings.stop_wait_seconds > 0
        else None,
        stop_wait_seconds=settings.stop_wait_seconds,
    )
