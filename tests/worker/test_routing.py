"""Routing, end to end through the app: a stop goes to the queue the claim recorded."""

from __future__ import annotations

from fastapi.testclient import TestClient
from openhands_stop.aws.claims import DynamoClaimTable
from openhands_stop.aws.clients import dynamodb_client
from openhands_stop.domain.models import utc_now

from local.emulation import Stack, seed
from tests.support import KEY, drain_queue
from tests.worker.support import create_queue


def test_a_claimed_conversation_is_stopped_through_its_workers_queue(
    stack: Stack, client: TestClient
) -> None:
    seed(stack, {"claimed": "STARTING", "unclaimed": "STARTING"})
    worker_queue = create_queue(stack, fifo=True)
    claim = DynamoClaimTable(dynamodb_client(), stack.table_name).claim(
        "claimed",
        run_id="run-7",
        worker_id="w-7",
        worker_instance="0123456789ab",
        cancel_queue_url=worker_queue,
        now=utc_now(),
    )
    assert claim.claimed

    for conversation_id in ("claimed", "unclaimed"):
        response = client.post(
            f"/api/conversations/{conversation_id}/stop", headers={"X-Session-API-Key": KEY}
        )
        assert response.status_code == 200

    assert [m["sid"] for m in drain_queue(stack, worker_queue)] == ["claimed"]
    assert [m["sid"] for m in drain_queue(stack)] == ["unclaimed"]  # no claim: default queue
