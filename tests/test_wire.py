"""The stop over the real HTTP wire: botocore talking to moto's server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from local.emulation import ROOT, Stack, seed
from tests.support import KEY, drain_queue, read_record


def test_a_stop_through_moto_server(wire_stack: Stack, wire_client: TestClient) -> None:
    seed(wire_stack)

    response = wire_client.post(
        "/api/conversations/demo-running/stop", headers={"X-Session-API-Key": KEY}
    )

    assert response.status_code == 200
    assert response.json()["conversation_status"] == "RUNNING"
    record = read_record(wire_stack, "demo-running")
    assert record is not None
    assert record["status"] == "STOPPED"
    [cancel] = drain_queue(wire_stack)
    assert cancel["sid"] == "demo-running"


def test_the_real_handler_through_moto_server(
    wire_stack: Stack, lambda_handler_factory: Callable[[Stack], Any]
) -> None:
    seed(wire_stack)
    handler = lambda_handler_factory(wire_stack)
    event = json.loads((ROOT / "events" / "stop-starting.json").read_text())

    response = handler(event)

    assert response["statusCode"] == 200
    assert json.loads(response["body"])["conversation_status"] == "STARTING"
    assert [m["sid"] for m in drain_queue(wire_stack)] == ["demo-starting"]
