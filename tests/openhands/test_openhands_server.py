"""A stop through this project's Lambda handler closes a real OpenHands session.

Each test joins a fresh conversation over socket.io, as OpenHands' UI does, so OpenHands'
own ``join_conversation`` / ``maybe_start_agent_loop`` starts the loop and the manager
claims it; then the stop goes through ``functions/stop_conversation/app.py``'s handler with
an API Gateway v2 event, and the test watches OpenHands' manager and the table.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from local.emulation import ROOT, Stack
from tests.openhands.support import (
    CLOSE_DELAY_SECONDS,
    MANAGER_CLASS,
    MEASUREMENTS,
    WORKER_ID,
    OpenHandsServer,
    fresh_conversation_id,
    wait_until,
)
from tests.support import KEY, LoadHandler, read_record

STOP_TO_CLOSED_BOUND_SECONDS = 2.0


def stop_event(conversation_id: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((ROOT / "events" / "stop-running.json").read_text())
    event["rawPath"] = event["requestContext"]["http"]["path"] = (
        f"/api/conversations/{conversation_id}/stop"
    )
    event["pathParameters"] = {"conversation_id": conversation_id}
    event["headers"]["x-session-api-key"] = KEY
    return event


def stop(load_handler: LoadHandler, stack: Stack, conversation_id: str) -> dict[str, Any]:
    """POST /api/conversations/{id}/stop through the Lambda handler; the parsed body."""
    response = load_handler(stack)(stop_event(conversation_id))
    assert response["statusCode"] == 200, response
    body: dict[str, Any] = json.loads(response["body"])
    return body


def record(server: OpenHandsServer, conversation_id: str) -> dict[str, Any]:
    found = read_record(server.stack, conversation_id)
    assert found is not None, conversation_id
    return found


def wait_until_recorded(server: OpenHandsServer, conversation_id: str) -> dict[str, Any]:
    """The record once the worker has written that the run's loop ended."""
    wait_until(lambda: "loop_stopped_via" in record(server, conversation_id), timeout=5)
    return record(server, conversation_id)


def start_running(server: OpenHandsServer, conversation_id: str) -> Any:
    """Join over socket.io; returns the client once OpenHands runs the loop and the record
    says this server claimed it."""
    client = server.connect(conversation_id)
    wait_until(lambda: conversation_id in server.sessions)
    assert conversation_id in server.running()
    claimed = record(server, conversation_id)
    assert claimed["status"] == "RUNNING"
    assert claimed["worker_id"] == WORKER_ID
    assert claimed["run_id"] == server.manager.stop_worker.run_id(conversation_id)
    # Its stops are routed to this server's own queue, made under the stack's prefix.
    assert claimed["cancel_queue_url"] == server.manager.stop_worker.queue_url
    assert claimed["cancel_queue_url"] != server.stack.stack_queue_url
    return client


def test_openhands_loaded_this_project_s_manager(openhands_server: OpenHandsServer) -> None:
    module, _, name = MANAGER_CLASS.rpartition(".")
    assert type(openhands_server.manager).__module__ == module
    assert type(openhands_server.manager).__name__ == name


def test_a_stop_through_the_lambda_closes_the_openhands_session_within_two_seconds(
    openhands_server: OpenHandsServer, lambda_handler_factory: LoadHandler
) -> None:
    server, conversation_id = openhands_server, fresh_conversation_id()
    client = start_running(server, conversation_id)
    session = server.sessions[conversation_id]
    controller, runtime = session.agent_session.controller, session.agent_session.runtime

    requested = time.monotonic()
    body = stop(lambda_handler_factory, server.stack, conversation_id)
    answered = time.monotonic()
    assert body["message"] == "Conversation stopped successfully"
    assert body["conversation_status"] == "RUNNING"

    gone = wait_until(lambda: conversation_id not in server.running(), timeout=10)
    assert controller.closed_at is not None
    closed_seconds = controller.closed_at - requested
    MEASUREMENTS.append(
        f"stop request -> OpenHands session closed: {closed_seconds * 1000:.0f} ms "
        f"(handler answered in {(answered - requested) * 1000:.0f} ms; "
        f"manager stopped listing the loop after {(gone - requested) * 1000:.0f} ms)"
    )
    assert closed_seconds < STOP_TO_CLOSED_BOUND_SECONDS
    # OpenHands' close_session ran: Session.close() and AgentSession.close().
    assert session.is_alive is False
    assert session.agent_session.is_closed()
    assert controller.state_saved
    assert str(controller.state.agent_state.value) == "stopped"
    assert runtime.closed.wait(5), "the runtime's shutdown was not started"
    assert client.disconnected.wait(5), "OpenHands did not disconnect the socket.io client"
    ended = wait_until_recorded(server, conversation_id)
    assert ended["status"] == "STOPPED"
    assert ended["loop_stopped_via"] == "queue"


def test_a_stop_of_a_session_openhands_already_closed_answers_not_running(
    openhands_server: OpenHandsServer, lambda_handler_factory: LoadHandler
) -> None:
    server, conversation_id = openhands_server, fresh_conversation_id()
    client = start_running(server, conversation_id)

    # OpenHands' own stop route (what its UI calls) closes the session inside OpenHands.
    own = httpx.post(f"{server.base_url}/api/conversations/{conversation_id}/stop", timeout=10)
    assert own.status_code == 200, own.text
    assert own.json()["message"] == "Conversation stopped successfully"
    assert conversation_id not in server.running()
    assert client.disconnected.wait(5)
    ended = wait_until_recorded(server, conversation_id)
    assert ended["status"] == "STOPPED"
    assert ended["loop_stopped_via"] == "host"

    body = stop(lambda_handler_factory, server.stack, conversation_id)
    assert body["message"] == "Conversation was not running"
    assert body["conversation_status"] == "STOPPED"


def test_a_session_openhands_closes_by_itself_is_stopped_in_the_table(
    openhands_server: OpenHandsServer,
) -> None:
    server, conversation_id = openhands_server, fresh_conversation_id()
    client = start_running(server, conversation_id)
    session = server.sessions[conversation_id]

    # No client left and idle past sandbox.close_delay: OpenHands' reaper closes it.
    client.close()
    wait_until(lambda: conversation_id not in server.running(), timeout=CLOSE_DELAY_SECONDS + 10)
    assert session.agent_session.is_closed()
    ended = wait_until_recorded(server, conversation_id)
    assert ended["status"] == "STOPPED"
    assert ended["loop_stopped_via"] == "host"


def test_the_backstop_closes_a_session_whose_cancel_was_lost(
    openhands_server: OpenHandsServer,
) -> None:
    server, conversation_id = openhands_server, fresh_conversation_id()
    client = start_running(server, conversation_id)

    # A stop recorded whose cancel never arrives: the record alone says STOPPED.
    server.stack.client("dynamodb").update_item(
        TableName=server.stack.table_name,
        Key={"conversation_id": {"S": conversation_id}},
        UpdateExpression="SET #s = :stopped",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":stopped": {"S": "STOPPED"}},
    )
    assert [str(o) for o in server.call(server.manager.stop_worker.backstop_once())] == ["stopped"]
    assert conversation_id not in server.running()
    assert server.sessions[conversation_id].agent_session.is_closed()
    assert client.disconnected.wait(5)
    assert wait_until_recorded(server, conversation_id)["loop_stopped_via"] == "backstop"


def test_a_stopped_conversation_starts_again_with_a_new_claim(
    openhands_server: OpenHandsServer, lambda_handler_factory: LoadHandler
) -> None:
    server, conversation_id = openhands_server, fresh_conversation_id()
    start_running(server, conversation_id)
    first = server.sessions[conversation_id]
    first_run = record(server, conversation_id)["run_id"]
    stop(lambda_handler_factory, server.stack, conversation_id)
    wait_until(lambda: conversation_id not in server.running())
    wait_until_recorded(server, conversation_id)

    start_running(server, conversation_id)  # left running: the server's shutdown ends it
    assert server.sessions[conversation_id] is not first
    assert record(server, conversation_id)["run_id"] != first_run
    assert "loop_stopped_via" not in record(server, conversation_id)


def test_a_conversation_running_on_another_worker_is_not_started_here(
    openhands_server: OpenHandsServer,
) -> None:
    import socketio

    server, conversation_id = openhands_server, fresh_conversation_id()
    server.stack.client("dynamodb").put_item(
        TableName=server.stack.table_name,
        Item={
            "conversation_id": {"S": conversation_id},
            "status": {"S": "RUNNING"},
            "worker_id": {"S": "another-worker"},
        },
    )
    with pytest.raises(socketio.exceptions.ConnectionError):
        server.connect(conversation_id)
    assert conversation_id not in server.running()
    assert record(server, conversation_id)["worker_id"] == "another-worker"
