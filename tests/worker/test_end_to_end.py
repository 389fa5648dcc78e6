"""The whole stop with real processes: moto's server, the stop API over HTTP, a worker process."""

from __future__ import annotations

import json
import signal

import httpx
import pytest

from local.emulation import Stack, seed
from tests.support import KEY, read_record
from tests.worker.processes import WorkerProcess, stop_api, wait_until, worker_process
from tests.worker.support import create_queue, queue_depth

CONVERSATION = "e2e-conversation"
STOP_TO_STOPPED_BOUND_MS = 2000


def _worker_env(backstop_seconds: float) -> dict[str, str]:
    return {
        "WORKER_ID": "e2e-worker",
        "BACKSTOP_SECONDS": str(backstop_seconds),
        "WAIT_TIME_SECONDS": "1",  # the poll returns on arrival anyway; this bounds shutdown
        "DEMO_TICK_SECONDS": "0.2",
    }


def _status(stack: Stack) -> str | None:
    record = read_record(stack, CONVERSATION)
    return None if record is None else str(record["status"])


def _stop(base_url: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/api/conversations/{CONVERSATION}/stop",
        headers={"X-Session-API-Key": KEY},
        timeout=10,
    )


@pytest.mark.slow
def test_a_stop_over_http_stops_the_running_loop_within_two_seconds(wire_stack: Stack) -> None:
    seed(wire_stack, {CONVERSATION: "STARTING"})
    with (
        stop_api(wire_stack) as base_url,
        worker_process(wire_stack, _worker_env(600), ["--demo", CONVERSATION]) as worker,
    ):
        worker.next_event("conversation_claimed")
        assert _status(wire_stack) == "RUNNING"

        response = _stop(base_url)
        assert response.status_code == 200
        assert response.json()["conversation_status"] == "RUNNING"

        stopped = worker.next_event("conversation_stopped")
        assert worker.terminate() == 0

    assert stopped["conversation_id"] == CONVERSATION
    assert stopped["via"] == "queue"
    assert stopped["cleanup_completed"] is True
    assert 0 <= stopped["stop_to_stopped_ms"] < STOP_TO_STOPPED_BOUND_MS
    assert _status(wire_stack) == "STOPPED"
    assert queue_depth(wire_stack, wire_stack.stack_queue_url) == (0, 0)  # handled and deleted
    assert any("agent loop stopped" in line for line in worker.stdout)
    [closed] = [e for e in worker.seen if e["event"] == "worker_stopped"]
    assert closed["loops_left"] == 0
    assert all(KEY not in json.dumps(event) for event in worker.seen)


@pytest.mark.slow
def test_the_backstop_stops_the_loop_when_the_cancel_is_lost(wire_stack: Stack) -> None:
    seed(wire_stack, {CONVERSATION: "STARTING"})
    with (
        stop_api(wire_stack) as base_url,
        worker_process(wire_stack, _worker_env(0.5), ["--demo", CONVERSATION]) as worker,
    ):
        worker.next_event("conversation_claimed")
        # Made after the worker's start (whose sweep deletes queues no worker owns): the
        # cancel will go where the worker never looks, as good as lost.
        black_hole = create_queue(wire_stack, fifo=True)
        wire_stack.client("dynamodb").update_item(
            TableName=wire_stack.table_name,
            Key={"conversation_id": {"S": CONVERSATION}},
            UpdateExpression="SET cancel_queue_url = :q",
            ExpressionAttributeValues={":q": {"S": black_hole}},
        )

        assert _stop(base_url).status_code == 200

        stopped = worker.next_event("conversation_stopped")
        assert worker.terminate() == 0

    assert stopped["via"] == "backstop"
    assert stopped["cleanup_completed"] is True
    assert _status(wire_stack) == "STOPPED"
    wait_until(lambda: queue_depth(wire_stack, black_hole) == (1, 0), "the lost cancel")
    assert queue_depth(wire_stack, wire_stack.stack_queue_url) == (0, 0)
    assert any("agent loop stopped" in line for line in worker.stdout)


@pytest.mark.slow
def test_sigterm_leaves_without_waiting_out_the_long_poll_in_flight(wire_stack: Stack) -> None:
    """Nothing to stop: the worker exits well inside the 20 s long poll it was waiting in
    (the poll is left to its daemon thread), its queue and liveness item deleted."""
    env = {**_worker_env(600), "WAIT_TIME_SECONDS": "20"}
    worker = WorkerProcess(wire_stack, env, [])
    started = worker.next_event("worker_started")
    worker.process.send_signal(signal.SIGTERM)
    try:
        code = worker.process.wait(timeout=10)  # half the poll: it did not wait it out
    finally:
        worker.terminate()

    assert code == 0
    [stopped] = [event for event in worker.seen if event.get("event") == "worker_stopped"]
    assert stopped["loops_left"] == 0
    listed = wire_stack.client("sqs").list_queues(QueueNamePrefix=wire_stack.worker_queue_prefix)
    assert started["queue_url"] not in listed.get("QueueUrls", [])
