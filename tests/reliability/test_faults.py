"""Every AWS fault a stop can meet: what the caller is told, what the table and the queue
hold, and that a retry of the same stop, once the fault clears, finishes the job."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError
from fastapi.testclient import TestClient
from openhands_stop.edge.app import create_app
from openhands_stop.edge.service import StopService
from openhands_stop.edge.settings import RouteSettings
from openhands_stop.wiring import build_service

from local.emulation import DEMO_SESSION_KEY, Stack, seed
from tests.reliability.faults import (
    DYNAMODB_INTERNAL,
    DYNAMODB_THROTTLING,
    LEAK_MARKERS,
    READ_TIMEOUT,
    SECRETS_INTERNAL,
    SECRETS_UNAVAILABLE,
    SQS_ACCESS_DENIED,
    SQS_INTERNAL,
    SQS_THROTTLING,
    Fault,
    FaultInjector,
    watch_service,
)
from tests.reliability.support import Evidence
from tests.support import AwsCallCounter, drain_queue, read_record

KEY_HEADER = {"X-Session-API-Key": DEMO_SESSION_KEY}
CID = "conv-fault"
ATTEMPTS = 3  # clients.CLIENT_CONFIG: standard mode, 3 attempts


def _stop(client: TestClient, cid: str = CID) -> Any:
    return client.post(f"/api/conversations/{cid}/stop", headers=KEY_HEADER)


def assert_no_internals(response: Any) -> None:
    """The body is the documented error shape and nothing else: no text of the cause."""
    assert response.json() == {
        "status": "error",
        "conversation_id": CID,
        "message": "Failed to stop conversation",
    }
    for marker in (*LEAK_MARKERS, "Exception", "Error"):
        assert marker not in response.text
        assert all(marker not in value for value in response.headers.values())


def _retry_after(response: Any) -> str:
    return str(response.headers.get("Retry-After", "none"))


def _queue_summary(messages: list[dict[str, Any]]) -> str:
    return f"{len(messages)} cancel" + ("" if len(messages) == 1 else "s")


@pytest.mark.parametrize(
    ("fault", "status"),
    [(DYNAMODB_THROTTLING, 503), (DYNAMODB_INTERNAL, 503), (READ_TIMEOUT, 503)],
    ids=lambda value: getattr(value, "name", str(value)),
)
def test_dynamodb_fault_leaves_the_conversation_running_and_a_retry_stops_it(  # noqa: PLR0917
    wire_stack: Stack,
    wire_client: TestClient,
    faults: FaultInjector,
    fault: Fault,
    status: int,
    evidence: Evidence,
) -> None:
    seed(wire_stack, {CID: "RUNNING"})
    faults.fail("UpdateItem", fault)

    failed = _stop(wire_client)

    assert failed.status_code == status
    assert failed.headers["Retry-After"] == "1"
    assert_no_internals(failed)
    assert faults.attempts["UpdateItem"] == ATTEMPTS
    before = read_record(wire_stack, CID)
    assert before == {"conversation_id": CID, "status": "RUNNING"}
    assert drain_queue(wire_stack) == []

    faults.clear()
    retried = _stop(wire_client)

    assert retried.status_code == 200
    assert retried.json()["message"] == "Conversation stopped successfully"
    record = read_record(wire_stack, CID)
    assert record is not None
    assert record["status"] == "STOPPED"
    cancels = drain_queue(wire_stack)
    assert [c["stop_id"] for c in cancels] == [record["stop_id"]]
    evidence(
        "Fault",
        f"DynamoDB {fault.name} (every attempt)",
        f"{failed.status_code}, Retry-After {_retry_after(failed)}, {ATTEMPTS} attempts, body "
        f"without internals; table RUNNING, queue empty. Retry: {retried.status_code}, "
        f"STOPPED, {_queue_summary(cancels)} (stop_id of the record)",
    )


@pytest.mark.parametrize(
    ("fault", "status"),
    [(SQS_INTERNAL, 503), (SQS_THROTTLING, 503), (READ_TIMEOUT, 503), (SQS_ACCESS_DENIED, 500)],
    ids=lambda value: getattr(value, "name", str(value)),
)
def test_sqs_fault_after_the_write_loses_no_cancel(  # noqa: PLR0917
    wire_stack: Stack,
    wire_client: TestClient,
    faults: FaultInjector,
    fault: Fault,
    status: int,
    evidence: Evidence,
) -> None:
    seed(wire_stack, {CID: "RUNNING"})
    faults.fail("SendMessage", fault)

    failed = _stop(wire_client)

    assert failed.status_code == status
    assert_no_internals(failed)
    transient = status == 503
    assert ("Retry-After" in failed.headers) is transient
    attempts = faults.attempts["SendMessage"]
    assert attempts == (ATTEMPTS if transient else 1)
    record = read_record(wire_stack, CID)
    assert record is not None
    assert record["status"] == "STOPPED"
    assert drain_queue(wire_stack) == []

    faults.clear()
    retried = _stop(wire_client)

    assert retried.status_code == 200
    assert retried.json()["conversation_status"] == "STOPPED"
    assert read_record(wire_stack, CID) == record  # the retry wrote nothing
    cancels = drain_queue(wire_stack)
    assert len(cancels) == 1
    assert cancels[0]["stop_id"] == record["stop_id"]
    assert cancels[0]["sid"] == CID
    evidence(
        "Fault",
        f"SQS {fault.name} after the record moved to STOPPED",
        f"{failed.status_code}, Retry-After {_retry_after(failed)}, "
        f"{attempts} attempt(s), body without internals; table STOPPED, "
        f"queue empty. Retry (within CANCEL_RESEND_WINDOW_SECONDS): {retried.status_code}, "
        f"record unchanged, {_queue_summary(cancels)} with the recorded stop_id",
    )


def test_write_applied_but_its_answer_lost_still_delivers_the_cancel(
    wire_stack: Stack,
    wire_service: StopService,
    wire_client: TestClient,
    evidence: Evidence,
) -> None:
    """DynamoDB did the write, the answer never came back: the retry finds STOPPED."""
    seed(wire_stack, {CID: "RUNNING"})
    lose = {"on": True}

    def lost_answer(**kwargs: Any) -> None:
        if lose["on"]:
            raise ReadTimeoutError(endpoint_url="http://127.0.0.1")

    client: Any = wire_service.table._client  # type: ignore[attr-defined]
    client.meta.events.register("after-call.dynamodb.UpdateItem", lost_answer)

    failed = _stop(wire_client)
    assert failed.status_code == 503
    assert_no_internals(failed)
    record = read_record(wire_stack, CID)
    assert record is not None
    assert record["status"] == "STOPPED"
    assert drain_queue(wire_stack) == []

    lose["on"] = False
    retried = _stop(wire_client)
    assert retried.status_code == 200
    cancels = drain_queue(wire_stack)
    assert [c["stop_id"] for c in cancels] == [record["stop_id"]]
    evidence(
        "Fault",
        "DynamoDB write applied, its answer lost",
        f"{failed.status_code}, Retry-After {_retry_after(failed)}; table STOPPED, queue empty. "
        f"Retry: {retried.status_code}, {_queue_summary(cancels)} with the recorded stop_id",
    )


def _service(stack: Stack, **overrides: str) -> StopService:
    environment = {**stack.function_environment(), **overrides}
    return build_service(RouteSettings.from_environment(environment))


@pytest.mark.parametrize(
    "fault", [SECRETS_UNAVAILABLE, SECRETS_INTERNAL, READ_TIMEOUT], ids=lambda f: f.name
)
def test_secrets_manager_down_on_a_cold_start_answers_503_and_touches_nothing(
    wire_stack: Stack, no_backoff: None, fault: Fault, evidence: Evidence
) -> None:
    seed(wire_stack, {CID: "RUNNING"})
    service = _service(wire_stack)
    faults = watch_service(service)
    faults.fail("GetSecretValue", fault)
    with TestClient(create_app(service)) as client, AwsCallCounter() as calls:
        failed = _stop(client)
        wrong_key = client.post(
            f"/api/conversations/{CID}/stop", headers={"X-Session-API-Key": "wrong"}
        )

        assert failed.status_code == 503
        assert failed.headers["Retry-After"] == "1"
        assert_no_internals(failed)
        assert wrong_key.status_code == 503  # no key to compare to: neither yes nor no
        assert calls.of("dynamodb") == calls.of("sqs") == 0
        assert read_record(wire_stack, CID) == {"conversation_id": CID, "status": "RUNNING"}
        assert drain_queue(wire_stack) == []

        faults.clear()
        retried = _stop(client)
    assert retried.status_code == 200
    assert read_record(wire_stack, CID)["status"] == "STOPPED"  # type: ignore[index]
    cancels = drain_queue(wire_stack)
    assert len(cancels) == 1
    evidence(
        "Fault",
        f"Secrets Manager {fault.name} on a cold start",
        f"{failed.status_code}, Retry-After {_retry_after(failed)}, body without internals; "
        f"0 DynamoDB/SQS calls, table RUNNING, queue empty. Retry: {retried.status_code}, "
        f"STOPPED, {_queue_summary(cancels)}",
    )


def test_secrets_manager_down_during_a_refresh_keeps_the_cached_key_serving(
    wire_stack: Stack, no_backoff: None, evidence: Evidence
) -> None:
    # Every request refreshes (cache of 1 ms): the refresh is what fails.
    seed(wire_stack, {CID: "RUNNING", "conv-b": "RUNNING"})
    service = _service(wire_stack, KEY_CACHE_SECONDS="0.001", KEY_REFRESH_MIN_SECONDS="0")
    faults = watch_service(service)
    with TestClient(create_app(service)) as client:
        assert _stop(client, "conv-b").status_code == 200
        faults.fail("GetSecretValue", SECRETS_UNAVAILABLE)
        served = _stop(client)
        wrong = client.post(f"/api/conversations/{CID}/stop", headers={"X-Session-API-Key": "x"})
    assert served.status_code == 200
    assert faults.attempts["GetSecretValue"] > 1  # the refresh was tried, and failed
    assert wrong.status_code == 401
    assert read_record(wire_stack, CID)["status"] == "STOPPED"  # type: ignore[index]
    evidence(
        "Fault",
        "Secrets Manager unavailable during a refresh (within KEY_MAX_STALE_SECONDS)",
        f"the cached key keeps serving: {served.status_code}, record STOPPED; "
        f"a wrong key still {wrong.status_code}",
    )


def test_secrets_manager_down_past_the_stale_limit_fails_closed(
    wire_stack: Stack, no_backoff: None, evidence: Evidence
) -> None:
    seed(wire_stack, {CID: "RUNNING", "conv-b": "RUNNING"})
    service = _service(
        wire_stack,
        KEY_CACHE_SECONDS="0.001",
        KEY_REFRESH_MIN_SECONDS="0",
        KEY_MAX_STALE_SECONDS="0",
    )
    faults = watch_service(service)
    with TestClient(create_app(service)) as client:
        assert _stop(client, "conv-b").status_code == 200
        faults.fail("GetSecretValue", SECRETS_UNAVAILABLE)
        failed = _stop(client)
        faults.clear()
        retried = _stop(client)
    assert failed.status_code == 503
    assert_no_internals(failed)
    assert retried.status_code == 200
    evidence(
        "Fault",
        "Secrets Manager unavailable during a refresh, cached key past KEY_MAX_STALE_SECONDS",
        f"fails closed: {failed.status_code}, Retry-After {_retry_after(failed)}. "
        f"Retry once it is back: {retried.status_code}",
    )


def _put_secret(stack: Stack, value: str) -> None:
    stack.client("secretsmanager").put_secret_value(SecretId=stack.secret_id, SecretString=value)


@pytest.mark.parametrize(
    ("case", "break_secret"),
    [
        ("blank secret value", lambda stack: _put_secret(stack, "   ")),
        ("JSON secret without session_api_key", lambda stack: _put_secret(stack, '{"k": 1}')),
        (
            "secret deleted",
            lambda stack: stack.client("secretsmanager").delete_secret(
                SecretId=stack.secret_id, ForceDeleteWithoutRecovery=True
            ),
        ),
    ],
    ids=["blank", "json-without-key", "deleted"],
)
def test_empty_or_deleted_secret_refuses_everyone(
    wire_stack: Stack, case: str, break_secret: Any, evidence: Evidence
) -> None:
    seed(wire_stack, {CID: "RUNNING"})
    break_secret(wire_stack)
    service = _service(wire_stack, KEY_REFRESH_MIN_SECONDS="0")
    with TestClient(create_app(service)) as client, AwsCallCounter() as calls:
        refused = _stop(client)
        assert calls.of("dynamodb") == calls.of("sqs") == 0
        assert refused.status_code == 401
        assert refused.json() == {"detail": "Unauthorized"}
        assert read_record(wire_stack, CID) == {"conversation_id": CID, "status": "RUNNING"}
        if case == "secret deleted":
            wire_stack.client("secretsmanager").create_secret(
                Name=wire_stack.secret_id.split(":")[-1].rsplit("-", 1)[0],
                SecretString=DEMO_SESSION_KEY,
            )
            service.verifier.forget()  # a new secret has a new ARN: an operator redeploys
            service = _service(
                dataclasses.replace(
                    wire_stack, secret_id=wire_stack.secret_id.split(":")[-1].rsplit("-", 1)[0]
                ),
                KEY_REFRESH_MIN_SECONDS="0",
            )
        else:
            _put_secret(wire_stack, DEMO_SESSION_KEY)
    with TestClient(create_app(service)) as client:
        restored = _stop(client)
    assert restored.status_code == 200
    assert len(drain_queue(wire_stack)) == 1
    back = (
        "Once re-created (a new ARN: redeploy with it)"
        if case == "secret deleted"
        else "Once the key is put back, without a restart"
    )
    evidence(
        "Fault",
        f"Session-key secret: {case}",
        f"fails closed: {refused.status_code} {json.dumps(refused.json())}, 0 DynamoDB/SQS "
        f"calls, table RUNNING. {back}: {restored.status_code}, 1 cancel",
    )


def test_secret_scheduled_for_deletion_fails_closed_until_restored(
    wire_stack: Stack, no_backoff: None, evidence: Evidence
) -> None:
    seed(wire_stack, {CID: "RUNNING"})
    secrets = wire_stack.client("secretsmanager")
    secrets.delete_secret(SecretId=wire_stack.secret_id, RecoveryWindowInDays=7)
    service = _service(wire_stack, KEY_REFRESH_MIN_SECONDS="0")
    with TestClient(create_app(service)) as client, AwsCallCounter() as calls:
        failed = _stop(client)
        assert calls.of("dynamodb") == calls.of("sqs") == 0
        secrets.restore_secret(SecretId=wire_stack.secret_id)
        restored = _stop(client)
    # Not the caller's fault and not transient: 500, no Retry-After, and nothing touched.
    assert failed.status_code == 500
    assert "Retry-After" not in failed.headers
    assert_no_internals(failed)
    assert restored.status_code == 200
    assert len(drain_queue(wire_stack)) == 1
    evidence(
        "Fault",
        "Session-key secret scheduled for deletion (GetSecretValue refused)",
        f"fails closed: {failed.status_code}, no Retry-After, body without internals, 0 "
        f"DynamoDB/SQS calls. After restore-secret, without a restart: {restored.status_code}, "
        "1 cancel",
    )


def test_retry_after_the_resend_window_leaves_the_cancel_to_the_worker_backstop(
    wire_stack: Stack, no_backoff: None, evidence: Evidence
) -> None:
    """The limit of the design, shown: past CANCEL_RESEND_WINDOW_SECONDS a retry sends
    nothing; the record says STOPPED, which the worker's backstop re-reads."""
    seed(wire_stack, {CID: "RUNNING"})
    service = _service(wire_stack, CANCEL_RESEND_WINDOW_SECONDS="0")
    faults = watch_service(service)
    faults.fail("SendMessage", SQS_INTERNAL)
    with TestClient(create_app(service)) as client:
        failed = _stop(client)
        faults.clear()
        retried = _stop(client)
    assert failed.status_code == 503
    assert retried.status_code == 200
    assert retried.json()["message"] == "Conversation was not running"
    assert read_record(wire_stack, CID)["status"] == "STOPPED"  # type: ignore[index]
    assert drain_queue(wire_stack) == []
    evidence(
        "Fault",
        "SQS failure, retried only after CANCEL_RESEND_WINDOW_SECONDS",
        f"{failed.status_code}, then {retried.status_code} 'not running' and no cancel: the "
        "record is STOPPED and the worker's backstop (it re-reads the record) ends the loop; "
        "the window (120 s) is the cancel's guarantee, the record the lasting one",
    )
