"""Every sample event in events/ runs through the real handler and gets its documented answer."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from local.emulation import ROOT, Stack, load_template, seed
from tests.support import drain_queue, read_record

EVENTS = ROOT / "events"

# event file -> (status code, message or detail, conversation status after, cancels sent)
EXPECTED: dict[str, tuple[int, str, str | None, int]] = {
    "stop-running.json": (200, "Conversation stopped successfully", "STOPPED", 1),
    "stop-starting.json": (200, "Conversation stopped successfully", "STOPPED", 1),
    "stop-already-stopped.json": (200, "Conversation was not running", "STOPPED", 0),
    "stop-unknown.json": (200, "Conversation was not running", None, 0),
    "stop-missing-key.json": (401, "Unauthorized", "RUNNING", 0),
    "stop-wrong-key.json": (401, "Unauthorized", "RUNNING", 0),
    "stop-invalid-id.json": (422, "string_pattern_mismatch", None, 0),
    "stop-running-rest-api.json": (200, "Conversation stopped successfully", "STOPPED", 1),
    "stop-running-function-url.json": (200, "Conversation stopped successfully", "STOPPED", 1),
}


def test_every_event_file_has_an_expectation() -> None:
    assert sorted(path.name for path in EVENTS.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_event(
    name: str, stack: Stack, lambda_handler: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    seed(stack)
    event = json.loads((EVENTS / name).read_text())
    status, message, status_after, cancels = EXPECTED[name]

    response = lambda_handler(event)

    assert response["statusCode"] == status
    body = json.loads(response["body"])
    if status == 200:
        assert body["message"] == message
    elif status == 401:
        assert body == {"detail": message}
    else:
        assert body["detail"][0]["type"] == message
    conversation_id = _conversation_id(event)
    record = read_record(stack, conversation_id)
    assert (record or {}).get("status") == status_after
    assert len(drain_queue(stack)) == cancels


def _conversation_id(event: dict[str, Any]) -> str:
    path = event.get("rawPath") or event["path"]
    return str(path).split("/")[3]


def test_events_use_the_demo_key_and_the_three_shapes() -> None:
    shapes = set()
    for path in EVENTS.glob("*.json"):
        event = json.loads(path.read_text())
        if "httpMethod" in event:
            shapes.add("rest")
        elif "lambda-url" in event["requestContext"]["domainName"]:
            shapes.add("function-url")
        else:
            shapes.add("http-api")
    assert shapes == {"rest", "http-api", "function-url"}


def test_the_sam_env_vars_file_names_the_template_function() -> None:
    """`make sam-local` writes it (tests/test_sam_local.py runs the target)."""
    from local.sam_local import env_vars

    env = env_vars("127.0.0.1", 5000)
    assert set(env) == {"StopConversationFunction"}
    assert {"CONVERSATIONS_TABLE_NAME", "CANCEL_QUEUE_URL", "SESSION_API_KEY_SECRET_ID"} <= set(
        env["StopConversationFunction"]
    )
    assert "StopConversationFunction" in load_template()["Resources"]


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
def test_on_lambda_nothing_but_the_stop_route_is_served(
    path: str, stack: Stack, lambda_handler: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    event = json.loads((EVENTS / "stop-running.json").read_text())
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = "GET"

    assert lambda_handler(event)["statusCode"] == 404


@pytest.mark.parametrize(
    ("name", "handler_name"),
    [
        ("stop-running.json", "_HttpApiEvent"),
        ("stop-running-function-url.json", "_HttpApiEvent"),
        ("stop-running-rest-api.json", "APIGateway"),
    ],
)
def test_each_event_s_asgi_scope_is_built_once(
    name: str,
    handler_name: str,
    stack: Stack,
    lambda_handler: Callable[[dict[str, Any]], dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mangum's own HTTP API handler builds the scope a second time to answer; ours does not,
    and REST API events still go to Mangum's handler for them."""
    from mangum.handlers import APIGateway, HTTPGateway

    built: list[str] = []
    for handler_class in (HTTPGateway, APIGateway):
        original: Any = handler_class.__dict__["scope"]

        def counted(self: Any, original: Any = original) -> Any:
            built.append(type(self).__name__)
            return original.fget(self)

        monkeypatch.setattr(handler_class, "scope", property(counted))
    seed(stack)

    response = lambda_handler(json.loads((EVENTS / name).read_text()))

    assert response["statusCode"] == 200
    assert built == [handler_name]
