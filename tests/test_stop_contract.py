"""Every row of the stop route's contract, against moto in process."""

from __future__ import annotations

import string
from typing import Any
from urllib.parse import quote

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from fastapi.testclient import TestClient
from openhands_stop.edge.app import create_app
from openhands_stop.edge.service import StopService
from openhands_stop.edge.settings import RouteSettings
from openhands_stop.wiring import build_service

from local.emulation import Stack, seed
from tests.support import KEY, AwsCallCounter, drain_queue, read_record

HEADERS = {"X-Session-API-Key": KEY}


def stop(client: TestClient, conversation_id: str, **headers: str) -> Any:
    return client.post(f"/api/conversations/{conversation_id}/stop", headers=headers or HEADERS)


@pytest.mark.parametrize("status", ["RUNNING", "STARTING"])
def test_a_live_conversation_is_stopped_with_one_write_and_one_cancel(
    stack: Stack, client: TestClient, aws_calls: AwsCallCounter, status: str
) -> None:
    seed(stack, {"conv-1": status})
    stop(client, "warm-up")  # the first request fetches the key; count a warm one
    aws_calls.calls.clear()

    response = stop(client, "conv-1")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "conversation_id": "conv-1",
        "message": "Conversation stopped successfully",
        "conversation_status": status,
    }
    assert dict(aws_calls.calls) == {"dynamodb.UpdateItem": 1, "sqs.SendMessage": 1}
    record = read_record(stack, "conv-1")
    assert record is not None
    assert record["status"] == "STOPPED"
    assert record["version"] == "1"
    [cancel] = drain_queue(stack)
    assert cancel["message_type"] == "close_session"
    assert cancel["sid"] == "conv-1"
    assert cancel["schema_version"] == 4
    assert cancel["run_id"] is None  # never claimed: no run to name
    assert cancel["row_version"] == 0  # the row as the stop found it (seeded: no version)
    assert cancel["stop_id"] == record["stop_id"]
    assert cancel["request_id"] == record["stop_request_id"]
    assert cancel["requested_at"].startswith(record["stopped_at"][:19])


@pytest.mark.parametrize("conversation_id", ["already-stopped", "never-existed"])
def test_a_conversation_that_is_not_running_answers_ok_and_sends_nothing(
    stack: Stack, client: TestClient, aws_calls: AwsCallCounter, conversation_id: str
) -> None:
    seed(stack, {"already-stopped": "STOPPED"})
    stop(client, "warm-up")
    aws_calls.calls.clear()

    response = stop(client, conversation_id)

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "conversation_id": conversation_id,
        "message": "Conversation was not running",
        "conversation_status": "STOPPED",
    }
    assert dict(aws_calls.calls) == {"dynamodb.UpdateItem": 1}
    assert drain_queue(stack) == []
    if conversation_id == "never-existed":
        assert read_record(stack, conversation_id) is None  # a stop never creates a row


def test_two_stops_make_one_transition(stack: Stack, client: TestClient) -> None:
    seed(stack, {"conv-1": "RUNNING"})

    first, second = stop(client, "conv-1"), stop(client, "conv-1")

    assert first.json()["message"] == "Conversation stopped successfully"
    assert second.json()["message"] == "Conversation was not running"
    record = read_record(stack, "conv-1")
    assert record is not None
    assert record["version"] == "1"
    # The second stop, inside the resend window, sent the same stop again: one delivery.
    assert [m["stop_id"] for m in drain_queue(stack)] == [record["stop_id"]]


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Session-API-Key": ""}, {"X-Session-API-Key": "wrong"}, {"Authorization": KEY}],
    ids=["missing", "empty", "wrong", "other-header"],
)
def test_an_unauthenticated_stop_is_401_and_touches_no_table_or_queue(
    seeded: Stack, client: TestClient, aws_calls: AwsCallCounter, headers: dict[str, str]
) -> None:
    response = client.post("/api/conversations/demo-running/stop", headers=headers)

    assert response.status_code == 401
    assert response.json() == {"detail": "Unauthorized"}
    assert aws_calls.of("dynamodb") == 0
    assert aws_calls.of("sqs") == 0
    record = read_record(seeded, "demo-running")
    assert record is not None
    assert record["status"] == "RUNNING"


@pytest.mark.parametrize("header", ["x-session-api-key", "X-SESSION-API-KEY", "x-Session-Api-Key"])
def test_the_key_header_name_is_case_insensitive(
    seeded: Stack, client: TestClient, header: str
) -> None:
    response = client.post("/api/conversations/demo-running/stop", headers={header: KEY})
    assert response.status_code == 200


def test_a_missing_key_makes_no_secrets_manager_call(
    seeded: Stack, client: TestClient, aws_calls: AwsCallCounter
) -> None:
    assert client.post("/api/conversations/demo-running/stop").status_code == 401
    assert aws_calls.total == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/conversations/demo-running"), ("POST", "/api/conversations/demo-running/start")],
)
def test_every_api_path_needs_the_key_even_one_that_does_not_exist(
    seeded: Stack, client: TestClient, aws_calls: AwsCallCounter, method: str, path: str
) -> None:
    """As under OpenHands' /api router: without the key nothing under /api is told apart."""
    refused = client.request(method, path)
    assert (refused.status_code, refused.json()) == (401, {"detail": "Unauthorized"})
    assert aws_calls.total == 0
    assert client.request(method, path, headers={"X-Session-API-Key": KEY}).status_code == 404


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
def test_the_local_docs_need_no_key(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200


BAD_IDS = ["a" * 129, "dots.in.id", "sp ace", "ünïcode", "semi;colon", "%2e%2e", "quote'"]


@pytest.mark.parametrize("conversation_id", BAD_IDS)
def test_an_invalid_id_is_422_in_fastapis_shape_and_never_reaches_aws(
    seeded: Stack, client: TestClient, aws_calls: AwsCallCounter, conversation_id: str
) -> None:
    stop(client, "warm-up")
    aws_calls.calls.clear()

    response = stop(client, conversation_id)

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["path", "conversation_id"]
    assert isinstance(error["msg"], str)
    assert isinstance(error["type"], str)
    assert aws_calls.total == 0


@pytest.mark.parametrize("conversation_id", ["a" * 128, "A", "a_b-C9"])
def test_ids_at_the_edges_of_the_pattern_are_accepted(
    seeded: Stack, client: TestClient, conversation_id: str
) -> None:
    assert stop(client, conversation_id).status_code == 200


@pytest.mark.parametrize("conversation_id", ["a" * 129, "bad.id"])
def test_an_invalid_id_without_a_key_is_401_not_422(
    seeded: Stack, client: TestClient, conversation_id: str
) -> None:
    response = client.post(f"/api/conversations/{conversation_id}/stop")
    assert response.status_code == 401
    assert response.json() == {"detail": "Unauthorized"}


ID_CHARACTERS = string.ascii_letters + string.digits + "_-"
"""What the issue allows in a conversation id: 1 to 128 of these, nothing else."""


def test_exactly_the_issues_id_characters_reach_aws(
    seeded: Stack, client: TestClient, aws_calls: AwsCallCounter
) -> None:
    """What ``CONVERSATION_ID_PATTERN`` is for: an id of the issue's characters reaches the
    table; one with any other character (every other printable ASCII one, whitespace, and
    letters and digits outside ASCII) is refused before any AWS call."""
    stop(client, "warm-up")
    aws_calls.calls.clear()

    assert stop(client, ID_CHARACTERS).status_code == 200  # all 64 in one id
    assert dict(aws_calls.calls) == {"dynamodb.UpdateItem": 1}

    aws_calls.calls.clear()
    # Beyond ASCII: é; ARABIC-INDIC DIGIT THREE (a digit to \d); FULLWIDTH z; KELVIN SIGN (a
    # k to a case-insensitive match).
    beyond_ascii = ["\u00e9", "\u0663", "\uff5a", "\u212a"]
    others = [c for c in string.printable if c not in ID_CHARACTERS] + beyond_ascii
    answers = {
        other: client.post(
            f"/api/conversations/a{quote(other, safe='')}b/stop", headers=HEADERS
        ).status_code
        for other in others
    }
    # 404 for "/" alone: decoded, it splits the path, which then names no route.
    assert answers == {other: 404 if other == "/" else 422 for other in others}
    assert aws_calls.total == 0


def client_error(code: str, status: int = 400) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": f"arn:aws:secret internals of {code}"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "Operation")


def failing(error: Exception) -> Any:
    def fail(*_: Any, **__: Any) -> Any:
        raise error

    return fail


TRANSIENT = [
    client_error("ProvisionedThroughputExceededException"),
    client_error("ThrottlingException"),
    client_error("InternalServerError", 500),
    ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
]
PERMANENT = [client_error("AccessDeniedException"), client_error("ResourceNotFoundException")]


def error_body(conversation_id: str) -> dict[str, Any]:
    return {
        "status": "error",
        "conversation_id": conversation_id,
        "message": "Failed to stop conversation",
    }


@pytest.mark.parametrize(
    "failure",
    [(error, 503) for error in TRANSIENT] + [(error, 500) for error in PERMANENT],
    ids=lambda failure: f"{failure[1]}-{str(failure[0])[:40]}",
)
def test_a_table_failure_answers_503_if_transient_else_500_with_no_internals(
    seeded: Stack,
    client: TestClient,
    service: StopService,
    monkeypatch: pytest.MonkeyPatch,
    failure: tuple[Exception, int],
) -> None:
    error, status = failure
    monkeypatch.setattr(service.table._client, "update_item", failing(error))  # type: ignore[attr-defined]

    response = stop(client, "demo-running")

    assert response.status_code == status
    assert response.headers.get("Retry-After") == ("1" if status == 503 else None)
    assert response.json() == error_body("demo-running")
    assert drain_queue(seeded) == []


def test_an_unexpected_exception_is_a_500_that_leaks_nothing(
    seeded: Stack, client: TestClient, service: StopService, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaky = RuntimeError("arn:aws:dynamodb:us-east-1:123456789012:table/secret-detail")
    monkeypatch.setattr(service.table._client, "update_item", failing(leaky))  # type: ignore[attr-defined]

    response = stop(client, "demo-running")

    assert response.status_code == 500
    assert response.json() == error_body("demo-running")


def test_a_failed_send_is_not_lost_a_retry_delivers_the_same_stop(
    seeded: Stack, client: TestClient, service: StopService, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs = service.cancels._client  # type: ignore[attr-defined]
    working_send = sqs.send_message
    monkeypatch.setattr(sqs, "send_message", failing(client_error("ThrottlingException")))

    failed = stop(client, "demo-running")

    assert failed.status_code == 503
    record = read_record(seeded, "demo-running")
    assert record is not None
    assert record["status"] == "STOPPED"  # workers' backstop sees it even with no cancel
    assert drain_queue(seeded) == []

    monkeypatch.setattr(sqs, "send_message", working_send)
    retried = stop(client, "demo-running")

    assert retried.status_code == 200
    [cancel] = drain_queue(seeded)
    assert cancel["stop_id"] == record["stop_id"]
    assert cancel["sid"] == "demo-running"


def test_a_stop_long_after_the_recorded_one_sends_nothing(
    seeded: Stack, settings: RouteSettings
) -> None:
    no_window = settings.model_copy(update={"cancel_resend_window_seconds": 0})
    client = TestClient(create_app(build_service(no_window)))
    assert stop(client, "demo-running").status_code == 200
    drain_queue(seeded)

    assert stop(client, "demo-running").json()["message"] == "Conversation was not running"
    assert drain_queue(seeded) == []


def test_a_row_with_a_status_of_a_newer_openhands_is_not_running(
    stack: Stack, client: TestClient
) -> None:
    seed(stack, {"archived": "ARCHIVED"})
    response = stop(client, "archived")
    assert response.json()["message"] == "Conversation was not running"
    assert drain_queue(stack) == []
