"""The one place that builds the product from its settings: the stop service, the worker.

Nothing here imports the web stack (FastAPI, Mangum): an event source other than HTTP, a
script, or a test can have the service without them; the worker's modules are imported only
by ``build_worker``, so the function's cold start never pays for them
(tests/test_import_budget.py). Clients are made here, once per process, and nothing here
touches the network.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from openhands_stop.aws.cancel_queue import CancelDestinations, SqsCancelQueue
from openhands_stop.aws.clients import dynamodb_client, secretsmanager_client, sqs_client
from openhands_stop.aws.conversation_table import DynamoConversationTable
from openhands_stop.aws.run_ends import DynamoRunEnds
from openhands_stop.aws.session_key import SecretsManagerKeySource
from openhands_stop.edge import observability
from openhands_stop.edge.service import StopService
from openhands_stop.edge.session_key import SessionKeyVerifier
from openhands_stop.edge.settings import RouteSettings

if TYPE_CHECKING:
    from openhands_stop.domain.ports import ClaimTable
    from openhands_stop.worker.clock import Clock
    from openhands_stop.worker.settings import WorkerSettings
    from openhands_stop.worker.worker import Worker


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


def build_worker(
    settings: WorkerSettings, *, table: ClaimTable | None = None, clock: Clock | None = None
) -> Worker:
    """An agent worker and its parts. ``table`` and ``clock`` replace the real ones in tests
    (a table that fails on cue, a wall clock set minutes off)."""
    from openhands_stop.aws.cancel_inbox import DeadLetterCopies, SqsCancelInbox
    from openhands_stop.aws.claims import DynamoClaimTable
    from openhands_stop.aws.clients import long_poll_sqs_client
    from openhands_stop.aws.worker_queues import WorkerQueues
    from openhands_stop.aws.worker_roster import DynamoWorkerRoster
    from openhands_stop.worker.backstop import Backstop
    from openhands_stop.worker.clock import Clock
    from openhands_stop.worker.liveness import Liveness
    from openhands_stop.worker.polling import InboxPoller
    from openhands_stop.worker.routing import FallbackRouter
    from openhands_stop.worker.runs import Runs
    from openhands_stop.worker.shutdown import Shutdown
    from openhands_stop.worker.worker import Worker

    clock = clock or Clock()
    dynamodb = dynamodb_client()
    sqs = long_poll_sqs_client()
    table = table or DynamoClaimTable(dynamodb, settings.table_name)
    roster = DynamoWorkerRoster(dynamodb, settings.table_name)
    shutdown = Shutdown()
    runs = Runs(table, settings.worker_id, settings.cleanup_timeout_seconds, now=clock.wall)
    queues = (
        WorkerQueues(sqs, settings.stack_queue_url, settings.worker_queue_prefix)
        if settings.worker_queue_prefix
        else None
    )
    liveness = Liveness(
        roster,
        table,
        runs,
        queues=queues,
        stack_queue_url=settings.stack_queue_url,
        worker_id=settings.worker_id,
        heartbeat_seconds=settings.queue_heartbeat_seconds,
        orphan_seconds=settings.orphan_queue_seconds,
        shutdown=shutdown,
        clock=clock,
    )
    dead_letters = DeadLetterCopies(sqs, settings.stack_queue_url)

    def poller(
        inbox: SqsCancelInbox,
        route: FallbackRouter | None = None,
        queue_missing: Callable[[str], Awaitable[None]] | None = None,
    ) -> InboxPoller:
        return InboxPoller(
            inbox,
            runs,
            shutdown=shutdown,
            wait_time_seconds=settings.wait_time_seconds,
            shutdown_grace_seconds=settings.shutdown_grace_seconds,
            set_aside=dead_letters.keep,
            route=route,
            queue_missing=queue_missing,
        )

    stack_queue = SqsCancelInbox(sqs, lambda: settings.stack_queue_url)
    if queues is None:
        queue_poller, stack_queue_poller = poller(stack_queue), None
    else:
        # The worker's own queue, by the name its current instance gives it.
        own_queue = SqsCancelInbox(sqs, lambda: liveness.queue_url)
        queue_poller = poller(own_queue, queue_missing=liveness.queue_missing)
        router = FallbackRouter(table, roster, queues, lambda: liveness.instance)
        stack_queue_poller = poller(stack_queue, route=router)
    return Worker(
        runs=runs,
        liveness=liveness,
        backstop=Backstop(
            table,
            runs,
            lambda: liveness.instance,
            interval_seconds=settings.backstop_seconds,
            grace_seconds=settings.backstop_grace_seconds,
            shutdown=shutdown,
            monotonic=clock.monotonic,
        ),
        queue_poller=queue_poller,
        stack_queue_poller=stack_queue_poller,
        shutdown=shutdown,
    )
