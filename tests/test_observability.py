"""One JSON line per request, its log line and its EMF metrics; tracing only on request;
the SnapStart hook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openhands_stop.edge import observability
from openhands_stop.edge.settings import RouteSettings
from openhands_stop.lambda_entry import build_handler

from local.emulation import Stack
from local.invoke import LambdaContext
from tests.support import KEY

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
NAMESPACE = "Tests/StopConversation"

Invoke = Callable[[dict[str, Any]], dict[str, Any]]
Lines = Callable[[], list[dict[str, Any]]]


def event(name: str, conversation_id: str | None = None, key: str | None = None) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    if conversation_id is not None:
        loaded["rawPath"] = f"/api/conversations/{conversation_id}/stop"
        loaded["pathParameters"] = {"conversation_id": conversation_id}
    if key is not None:
        loaded["headers"]["x-session-api-key"] = key
    return loaded


@pytest.fixture(autouse=True)
def namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our metrics namespace, in the environment before the handler reads its settings."""
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)


@pytest.fixture
def lines(capsys: pytest.CaptureFixture[str]) -> Lines:
    """Reads the JSON lines printed on stdout since the last read."""
    capsys.readouterr()

    def read() -> list[dict[str, Any]]:
        captured = capsys.readouterr()
        assert KEY not in captured.out
        assert KEY not in captured.err
        return [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]

    return read


@pytest.fixture
def emitted(lines: Lines) -> Lines:
    """Reads the EMF lines printed since the last read."""
    return lambda: [line for line in lines() if "_aws" in line]


def metric_names(blob: dict[str, Any]) -> set[str]:
    (directive,) = blob["_aws"]["CloudWatchMetrics"]
    return {metric["Name"] for metric in directive["Metrics"]}


def only_blob(blobs: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(blobs) == 1, "a request's metrics are one EMF line"
    (blob,) = blobs
    (directive,) = blob["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE
    assert directive["Dimensions"] == [["service"]]
    assert all(metric["Unit"] == "Count" for metric in directive["Metrics"])
    assert isinstance(blob["_aws"]["Timestamp"], int)
    assert blob["service"] == "stop-conversation"
    for name in metric_names(blob):
        assert blob[name] == 1
    return blob


def test_a_stop_of_a_running_conversation_counts_conversation_stopped(
    seeded: Stack, lambda_handler: Invoke, emitted: Lines
) -> None:
    assert lambda_handler(event("stop-running"))["statusCode"] == 200
    blob = only_blob(emitted())
    assert metric_names(blob) == {"ConversationStopped"}


def test_a_retried_stop_counts_not_running_and_the_resent_cancel(
    seeded: Stack, lambda_handler: Invoke, emitted: Lines
) -> None:
    lambda_handler(event("stop-running"))
    emitted()
    assert lambda_handler(event("stop-running"))["statusCode"] == 200
    blob = only_blob(emitted())
    assert metric_names(blob) == {"ConversationNotRunning", "CancelResent"}


def test_a_stop_of_an_unknown_conversation_counts_not_running_only(
    seeded: Stack, lambda_handler: Invoke, emitted: Lines
) -> None:
    assert lambda_handler(event("stop-unknown"))["statusCode"] == 200
    assert metric_names(only_blob(emitted())) == {"ConversationNotRunning"}


@pytest.mark.parametrize("name", ["stop-wrong-key", "stop-missing-key"])
def test_a_refused_key_counts_unauthorized(
    name: str, seeded: Stack, lambda_handler: Invoke, emitted: Lines
) -> None:
    assert lambda_handler(event(name))["statusCode"] == 401
    assert metric_names(only_blob(emitted())) == {"Unauthorized"}


def test_an_aws_failure_counts_dependency_failure_with_the_dependency_named(
    seeded: Stack, lambda_handler: Invoke, emitted: Lines
) -> None:
    seeded.client("dynamodb").delete_table(TableName=seeded.table_name)
    assert lambda_handler(event("stop-running"))["statusCode"] == 500
    blob = only_blob(emitted())
    assert metric_names(blob) == {"DependencyFailure"}
    assert blob["dependency"] == "dynamodb"
    assert blob["transient"] is False
    assert blob["level"] == "ERROR"


def test_an_invalid_request_emits_no_metric_line(
    seeded: Stack, lambda_handler: Invoke, emitted: Lines
) -> None:
    assert lambda_handler(event("stop-invalid-id"))["statusCode"] == 422
    assert emitted() == []


def test_metadata_of_one_request_does_not_leak_into_the_next(
    seeded: Stack, lambda_handler: Invoke, emitted: Lines
) -> None:
    seeded.client("dynamodb").delete_table(TableName=seeded.table_name)
    lambda_handler(event("stop-running"))
    emitted()
    lambda_handler(event("stop-wrong-key"))
    blob = only_blob(emitted())
    assert "dependency" not in blob


@pytest.mark.parametrize(
    ("name", "status", "outcome", "counted"),
    [
        ("stop-running", 200, "stopped", True),
        ("stop-unknown", 200, "not_running", True),
        ("stop-wrong-key", 401, "unauthorized", True),
        ("stop-invalid-id", 422, "invalid_request", False),
    ],
)
def test_each_request_writes_one_log_line_with_its_ids_and_outcome(  # noqa: PLR0917
    name: str,
    status: int,
    outcome: str,
    counted: bool,
    seeded: Stack,
    settings: RouteSettings,
    lines: Lines,
) -> None:
    """The request's log line is its EMF line: ids to find it by, never the key."""
    handler = build_handler(settings)
    lines()
    answer = handler(event(name), LambdaContext(aws_request_id="req-0123"))
    assert answer["statusCode"] == status
    (line,) = lines()
    assert line["level"] == "INFO"
    assert line["service"] == "stop-conversation"
    assert line["outcome"] == outcome
    assert line["request_id"] == line["function_request_id"] == "req-0123"
    assert isinstance(line["cold_start"], bool)
    assert ("_aws" in line) is counted
    if outcome != "invalid_request":
        assert line["conversation_id"] == event(name)["pathParameters"]["conversation_id"]


def test_only_the_first_request_line_of_a_process_says_cold_start(
    seeded: Stack, settings: RouteSettings, lines: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observability, "_cold_start", [True])
    handler = build_handler(settings)
    lines()
    for _ in range(2):
        handler(event("stop-unknown"), LambdaContext())
    assert [line["cold_start"] for line in lines()] == [True, False]


@pytest.mark.parametrize(
    ("value", "enabled"),
    [(None, False), ("true", False), ("TRUE", False), ("false", True), ("0", True)],
)
def test_tracing_is_on_only_when_explicitly_enabled(value: str | None, enabled: bool) -> None:
    environ = {} if value is None else {"POWERTOOLS_TRACE_DISABLED": value}
    assert observability.tracing_enabled(environ) is enabled


_IMPORT_PROBE = """
import sys
from openhands_stop.lambda_entry import build_handler
from openhands_stop.edge.settings import RouteSettings
build_handler(RouteSettings(CONVERSATIONS_TABLE_NAME="t", CANCEL_QUEUE_URL="q",
                       SESSION_API_KEY_SECRET_ID="s"))
print("aws_xray_sdk" in sys.modules)
"""


@pytest.mark.parametrize(("trace_disabled", "loaded"), [("true", False), ("false", True)])
def test_the_xray_sdk_is_imported_only_by_a_traced_deployment(
    trace_disabled: str, loaded: bool
) -> None:
    env = {
        **os.environ,
        "POWERTOOLS_TRACE_DISABLED": trace_disabled,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    probe = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
        timeout=60,
    )
    assert probe.stdout.strip().splitlines()[-1] == str(loaded)


def test_a_snapstart_restore_drops_the_cached_key(
    seeded: Stack, settings: RouteSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a restore, a key rotated while the snapshot slept is accepted at once."""
    hooks: list[Callable[[], None]] = []
    fake = types.ModuleType("snapshot_restore_py")
    fake.register_after_restore = hooks.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", fake)
    handler = build_handler(settings)
    assert len(hooks) == 1

    def invoke(key: str) -> int:
        status: int = handler(event("stop-unknown", key=key), LambdaContext())["statusCode"]
        return status

    assert invoke(KEY) == 200  # the key is now cached
    rotated = "rotated-session-key-0123456789"
    seeded.client("secretsmanager").put_secret_value(
        SecretId=seeded.secret_id, SecretString=rotated
    )
    assert invoke(rotated) == 401  # a refresh on a miss is rate-limited: the cache still rules
    hooks[0]()
    assert invoke(rotated) == 200


def test_the_service_and_namespace_are_read_once_at_init(
    seeded: Stack, lambda_handler: Invoke, emitted: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Changed/AfterInit")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "changed-after-init")
    lambda_handler(event("stop-running"))
    [line] = emitted()
    assert line["service"] == "stop-conversation"
    assert line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == NAMESPACE
