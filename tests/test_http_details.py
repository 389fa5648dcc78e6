"""HTTP details every answer shares: no caching, no sniffing, no redirect built from headers,
and the failure body with OpenHands' three keys."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient
from openhands_stop.edge.headers import NO_CACHE_HEADERS
from openhands_stop.edge.service import StopService

from local.emulation import ROOT, Stack
from tests.conftest import KEY

EVENTS = ROOT / "events"
STOP = "/api/conversations/demo-running/stop"
OPENHANDS_NO_CACHE = {
    "cache-control": "no-cache, no-store, must-revalidate, max-age=0",
    "pragma": "no-cache",
    "expires": "0",
}


def assert_uncached(response: Any) -> None:
    for name, value in OPENHANDS_NO_CACHE.items():
        assert response.headers.get_list(name) == [value], name
    assert response.headers.get_list("x-content-type-options") == ["nosniff"]


def _throttled(*_: Any, **__: Any) -> Any:
    error: Any = {"Error": {"Code": "ThrottlingException"}}
    raise ClientError(error, "UpdateItem")


def test_the_headers_are_openhands_own_plus_nosniff() -> None:
    assert {name.decode(): value.decode() for name, value in NO_CACHE_HEADERS} == {
        **OPENHANDS_NO_CACHE,
        "x-content-type-options": "nosniff",
    }


@pytest.mark.parametrize(
    "case",
    [
        ("POST", STOP, {"X-Session-API-Key": KEY}, 200),
        ("POST", STOP, {}, 401),
        ("POST", STOP, {"X-Session-API-Key": "wrong"}, 401),
        ("POST", "/api/conversations/bad.id/stop", {"X-Session-API-Key": KEY}, 422),
        ("GET", "/api/conversations/demo-running", {"X-Session-API-Key": KEY}, 404),
        ("GET", "/nothing-here", {}, 404),
    ],
    ids=["200", "401-missing", "401-wrong", "422", "404-api", "404-outside-api"],
)
def test_every_answer_forbids_caching_and_sniffing(
    seeded: Stack, client: TestClient, case: tuple[str, str, dict[str, str], int]
) -> None:
    method, path, headers, status = case
    response = client.request(method, path, headers=headers)
    assert response.status_code == status
    assert_uncached(response)


def test_a_503_forbids_caching_and_has_openhands_three_keys(
    seeded: Stack, client: TestClient, service: StopService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service.table._client, "update_item", _throttled)  # type: ignore[attr-defined]
    response = client.post(STOP, headers={"X-Session-API-Key": KEY})
    assert response.status_code == 503
    assert_uncached(response)
    # Key for key OpenHands' failure body: no fourth "conversation_status" key.
    assert list(response.json()) == ["status", "conversation_id", "message"]


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Session-API-Key": KEY},
        {"X-Session-API-Key": KEY, "Host": "evil.example", "X-Forwarded-Proto": "javascript"},
        {},
    ],
    ids=["key", "key-hostile-host", "no-key"],
)
def test_a_trailing_slash_is_never_redirected(
    seeded: Stack, client: TestClient, headers: dict[str, str]
) -> None:
    """Starlette would answer 307 with a Location built from Host and X-Forwarded-Proto."""
    response = client.post(STOP + "/", headers=headers, follow_redirects=False)
    assert response.status_code == (404 if headers else 401)
    assert "location" not in response.headers
    assert "evil" not in response.text
    assert_uncached(response)


@pytest.mark.parametrize(("event", "status"), [("stop-running", 200), ("stop-missing-key", 401)])
def test_the_lambda_s_answers_carry_the_headers_too(
    seeded: Stack, lambda_handler: Any, event: str, status: int
) -> None:
    """Through Mangum and API Gateway's payload, as the deployed function answers."""
    response = lambda_handler(json.loads((EVENTS / f"{event}.json").read_text()))
    assert response["statusCode"] == status
    headers = {name.lower(): value for name, value in response["headers"].items()}
    for name, value in OPENHANDS_NO_CACHE.items():
        assert headers[name] == value
    assert headers["x-content-type-options"] == "nosniff"
