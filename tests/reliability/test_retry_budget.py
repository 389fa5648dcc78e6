"""botocore's retry configuration, as applied to the clients the service builds: standard
mode, a bounded number of attempts, and a worst case that fits the function's timeout."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from openhands_stop.aws import clients
from openhands_stop.aws.conversation_table import DynamoConversationTable
from openhands_stop.domain import DependencyFailure
from openhands_stop.domain.models import StopRequest, utc_now
from openhands_stop.edge.service import StopService

from local.emulation import load_template
from tests.reliability.faults import DYNAMODB_THROTTLING, FaultInjector
from tests.reliability.support import Evidence
from tests.support import worst_call_seconds

ATTEMPTS = 3
CONFIG: Any = clients.CLIENT_CONFIG
LAMBDA_MARGIN_SECONDS = 1.0  # the function's own work, around the two calls of a warm stop


def _clients(service: StopService) -> dict[str, Any]:
    source: Any = service.verifier._source
    return {
        "dynamodb": service.table._client,  # type: ignore[attr-defined]
        "sqs": service.cancels._client,  # type: ignore[attr-defined]
        "secretsmanager": source._client,
    }


def test_clients_use_standard_retries_with_bounded_attempts_and_timeouts(
    wire_service: StopService, evidence: Evidence
) -> None:
    for client in _clients(wire_service).values():
        config = client.meta.config
        assert config.retries["mode"] == "standard"
        assert config.retries["total_max_attempts"] == ATTEMPTS
        assert config.connect_timeout == CONFIG.connect_timeout
        assert config.read_timeout == CONFIG.read_timeout
        assert config.user_agent_extra == clients.USER_AGENT_EXTRA
    config = CONFIG
    evidence(
        "Retry policy",
        "botocore config on the DynamoDB, SQS and Secrets Manager clients",
        f"standard mode, {config.retries['total_max_attempts']} attempts in all, connect "
        f"{config.connect_timeout} s, read {config.read_timeout} s",
    )


def test_a_warm_stop_worst_case_fits_the_function_timeout(evidence: Evidence) -> None:
    timeout = load_template()["Resources"]["StopConversationFunction"]["Properties"]["Timeout"]
    config = CONFIG
    write = worst_call_seconds(config, "dynamodb")
    send = worst_call_seconds(config, "sqs")
    assert write + send + LAMBDA_MARGIN_SECONDS <= timeout
    evidence(
        "Retry policy",
        "worst case of a warm stop (write + send, every attempt failing) vs function timeout",
        f"{write:.2f} s + {send:.2f} s + {LAMBDA_MARGIN_SECONDS:.0f} s margin <= {timeout} s: "
        "a slow dependency becomes 503 + Retry-After, not a Lambda timeout",
    )


def test_every_client_makes_exactly_the_configured_attempts(
    wire_service: StopService, faults: FaultInjector
) -> None:
    faults.fail("UpdateItem", DYNAMODB_THROTTLING)
    stop = StopRequest(stop_id="s", request_id="r", requested_at=utc_now())
    with pytest.raises(DependencyFailure) as failure:
        wire_service.table.mark_stopped("c", stop)
    assert failure.value.transient
    assert faults.attempts["UpdateItem"] == ATTEMPTS


def test_a_silent_endpoint_is_abandoned_after_the_configured_attempts(
    monkeypatch: pytest.MonkeyPatch, evidence: Evidence
) -> None:
    """A real socket that accepts and never answers: the read timeout is what ends it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
    table = DynamoConversationTable(clients.dynamodb_client(), "t")
    stop = StopRequest(stop_id="s", request_id="r", requested_at=utc_now())
    started = time.monotonic()
    try:
        with pytest.raises(DependencyFailure) as failure:
            table.mark_stopped("c", stop)
        elapsed = time.monotonic() - started
    finally:
        listener.close()
        for connection in accepted:
            connection.close()
    assert failure.value.transient
    assert len(accepted) == ATTEMPTS
    evidence(
        "Fault",
        "DynamoDB endpoint that accepts and never answers (real socket)",
        f"{len(accepted)} connections, abandoned after {elapsed:.1f} s "
        f"(bound {worst_call_seconds(clients.CLIENT_CONFIG, 'dynamodb'):.2f} s); "
        "transient failure, so 503 + Retry-After",
    )
