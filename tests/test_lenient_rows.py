"""Rows written by other code: only ``status`` is contract; the answer is always the contract's."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openhands_stop.aws.conversation_table import record_from_item

from local.emulation import Stack
from tests.support import KEY, drain_queue, read_record

HEADERS = {"X-Session-API-Key": KEY}

BAD_FIELDS: dict[str, dict[str, Any]] = {
    "worker-id-number": {"worker_id": {"N": "7"}},
    "queue-url-number": {"cancel_queue_url": {"N": "12"}},
    "queue-url-map": {"cancel_queue_url": {"M": {"url": {"S": "x"}}}},
    "version-fraction": {"version": {"N": "1.5"}},
    "version-string": {"version": {"S": "one"}},
    "run-id-bool": {"run_id": {"BOOL": True}},
    "claimed-at-words": {"claimed_at": {"S": "this morning"}},
    "via-unknown": {"loop_stopped_via": {"S": "teleported"}},
}


def put_row(stack: Stack, cid: str, status: str, extra: dict[str, Any]) -> None:
    item = {"conversation_id": {"S": cid}, "status": {"S": status}, **extra}
    stack.client("dynamodb").put_item(TableName=stack.table_name, Item=item)


@pytest.mark.parametrize("case", sorted(BAD_FIELDS))
def test_a_running_row_with_a_malformed_field_is_stopped_and_its_cancel_sent(
    stack: Stack, client: TestClient, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Once a 500 after the write committed, for every retry; now the contract's answer."""
    put_row(stack, case, "RUNNING", BAD_FIELDS[case])
    caplog.set_level(logging.WARNING, logger="openhands_stop.rows")

    response = client.post(f"/api/conversations/{case}/stop", headers=HEADERS)

    assert response.status_code == 200
    assert response.json()["message"] == "Conversation stopped successfully"
    assert response.json()["conversation_status"] == "RUNNING"
    [cancel] = drain_queue(stack)  # an unusable queue URL is absent: the stack queue
    assert cancel["sid"] == case
    [field] = BAD_FIELDS[case]
    assert f"fields={field}" in caplog.text


def test_a_retry_of_a_stop_on_a_malformed_row_answers_too(stack: Stack, client: TestClient) -> None:
    put_row(stack, "retried", "RUNNING", {"version": {"N": "1.5"}, "worker_id": {"N": "3"}})
    answers = [client.post("/api/conversations/retried/stop", headers=HEADERS) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json()["message"] for a in answers] == [
        "Conversation stopped successfully",
        "Conversation was not running",
        "Conversation was not running",
    ]


def test_a_naive_stopped_at_is_read_as_utc_and_the_resend_still_works(
    stack: Stack, client: TestClient
) -> None:
    """A recorded stop whose moment has no timezone: the retry window is computed in UTC."""
    client.post("/api/conversations/warm/stop", headers=HEADERS)
    put_row(stack, "naive", "RUNNING", {})
    assert client.post("/api/conversations/naive/stop", headers=HEADERS).status_code == 200
    [first] = drain_queue(stack)
    row = read_record(stack, "naive")
    assert row is not None
    naive = row["stopped_at"].removesuffix("+00:00")
    stack.client("dynamodb").update_item(
        TableName=stack.table_name,
        Key={"conversation_id": {"S": "naive"}},
        UpdateExpression="SET stopped_at = :naive",
        ExpressionAttributeValues={":naive": {"S": naive}},
    )

    again = client.post("/api/conversations/naive/stop", headers=HEADERS)

    assert again.json()["message"] == "Conversation was not running"
    [resent] = drain_queue(stack)
    assert resent == first


def test_the_resent_cancel_is_identical_to_the_first(stack: Stack, client: TestClient) -> None:
    """requested_at is stored to the millisecond, so the cancel rebuilt from the row is the
    same message, byte for byte in its fields, as the one first sent."""
    put_row(stack, "twice", "RUNNING", {"run_id": {"S": "run-1"}})
    client.post("/api/conversations/twice/stop", headers=HEADERS)
    [first] = drain_queue(stack)
    client.post("/api/conversations/twice/stop", headers=HEADERS)
    [resent] = drain_queue(stack)
    assert resent == first
    assert first["run_id"] == "run-1"
    assert first["requested_at"].endswith("Z") or first["requested_at"][-6:] in ("+00:00",)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"conversation_id": {"S": "c"}, "status": {"S": "RUNNING"}}, "RUNNING"),
        ({"conversation_id": {"S": "c"}, "status": {"N": "1"}}, None),
        ({"conversation_id": {"N": "1"}, "status": {"S": "RUNNING"}}, None),
        ({"conversation_id": {"S": "c"}}, None),
        ({}, None),
    ],
)
def test_only_status_and_the_key_decide_whether_there_is_a_record(
    item: dict[str, Any], expected: str | None
) -> None:
    record = record_from_item(item)
    assert (record.status if record else None) == expected


def test_every_malformed_field_is_read_as_absent() -> None:
    item: dict[str, Any] = {"conversation_id": {"S": "c"}, "status": {"S": "STOPPED"}}
    for extra in BAD_FIELDS.values():
        item.update(extra)
    item["stopped_at"] = {"S": "2026-12-01T10:00:00"}  # naive: UTC, not absent
    record = record_from_item(item)
    assert record is not None
    assert record.worker_id is None
    assert record.cancel_queue_url is None
    assert record.version is None
    assert record.run_id is None
    assert record.claimed_at is None
    assert record.loop_stopped_via is None
    assert record.stopped_at is not None
    assert record.stopped_at.utcoffset() is not None
    assert record.stopped_at.isoformat() == "2026-12-01T10:00:00+00:00"
