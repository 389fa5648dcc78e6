"""Where the route sends a cancel: the run's worker queue when allowed, else the stack's."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from openhands_stop.aws.cancel_queue import CancelDestinations

from local.emulation import Stack
from tests.support import KEY, drain_queue
from tests.worker.support import create_queue

HEADERS = {"X-Session-API-Key": KEY}
STACK_QUEUE = "https://sqs.us-east-1.amazonaws.com/111122223333/prod-CancelQueue-AB12.fifo"
PREFIX = "prod_cancel-worker-"
WORKER = f"https://sqs.us-east-1.amazonaws.com/111122223333/{PREFIX}0a1b2c3d4e5f.fifo"


def put_claimed(stack: Stack, cid: str, queue_url: str) -> None:
    item = {
        "conversation_id": {"S": cid},
        "status": {"S": "RUNNING"},
        "run_id": {"S": f"run-{cid}"},
        "cancel_queue_url": {"S": queue_url},
    }
    stack.client("dynamodb").put_item(TableName=stack.table_name, Item=item)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        (STACK_QUEUE, True),
        (WORKER, True),
        (WORKER.replace("111122223333", "999999999999"), False),  # another account
        (WORKER.replace("https://", "http://"), False),  # another scheme
        (WORKER.replace("us-east-1", "eu-west-1"), False),  # another host
        (WORKER + "#/111122223333/prod-CancelDeadLetter.fifo", False),  # a fragment
        (WORKER + "?QueueUrl=x", False),  # a query
        (WORKER.replace("0a1b2c3d4e5f", "0a1b2c"), False),  # not 12 hex
        (WORKER.replace("0a1b2c3d4e5f", "0A1B2C3D4E5F"), False),
        (WORKER.replace(".fifo", "x.fifo"), False),
        # A stack named prod_cancel-worker-x cannot exist (no `_` in stack names); one named
        # prod-cancel-worker-x has the prefix prod-cancel-worker-x_cancel-worker-: never ours.
        (WORKER.replace(PREFIX, "prod-cancel-worker-x_cancel-worker-"), False),
        ("https://sqs.us-east-1.amazonaws.com/111122223333/prod-CancelDeadLetter.fifo", False),
        ("https://sqs.us-east-1.amazonaws.com/111122223333/other-team-queue", False),
        (f"https://sqs.us-east-1.amazonaws.com/111122223333/{PREFIX}x/../../evil", False),
        ("https://sqs.us-east-1.amazonaws.com/111122223333/hand-made.fifo", False),
        (f"file:///111122223333/{PREFIX}x.fifo", False),
        ("not a url", False),
    ],
)
def test_destinations_are_the_stack_queue_and_the_prefix_in_its_account(
    url: str, allowed: bool
) -> None:
    destinations = CancelDestinations(STACK_QUEUE, worker_queue_prefix=PREFIX)
    assert destinations.allows(url) is allowed


def test_without_a_prefix_only_the_stack_queue_is_allowed() -> None:
    destinations = CancelDestinations(STACK_QUEUE)
    assert destinations.allows(STACK_QUEUE)
    assert not destinations.allows(STACK_QUEUE.replace("prod-CancelQueue-AB12", f"{PREFIX}1"))


def test_a_row_pointing_outside_the_fleet_gets_its_cancel_on_the_stack_queue(
    stack: Stack, client: TestClient
) -> None:
    """A row's queue URL is data: the dead-letter queue (or any queue) is never a target."""
    put_claimed(stack, "misrouted", stack.dead_letter_queue_url)
    response = client.post("/api/conversations/misrouted/stop", headers=HEADERS)
    assert response.status_code == 200
    assert [c["sid"] for c in drain_queue(stack)] == ["misrouted"]
    assert drain_queue(stack, stack.dead_letter_queue_url) == []


def test_a_deleted_worker_queue_falls_back_to_the_stack_queue(
    stack: Stack, client: TestClient
) -> None:
    """Its worker shut down (or was swept as an orphan): the stop still answers, nothing lost."""
    gone = create_queue(stack, fifo=True)
    stack.client("sqs").delete_queue(QueueUrl=gone)
    put_claimed(stack, "orphaned", gone)
    response = client.post("/api/conversations/orphaned/stop", headers=HEADERS)
    assert response.status_code == 200
    assert response.json()["message"] == "Conversation stopped successfully"
    [cancel] = drain_queue(stack)
    assert (cancel["sid"], cancel["run_id"]) == ("orphaned", "run-orphaned")
