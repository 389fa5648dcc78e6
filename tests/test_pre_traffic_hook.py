"""CodeDeploy's pre-traffic hook (functions/pre_traffic_hook/app.py) against the real stop
handler: it passes a working version, fails a broken one, always reports to CodeDeploy, and
never logs the key."""

from __future__ import annotations

import importlib.util
import io
import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from local.emulation import DEMO_SESSION_KEY, ROOT, Stack

VERSION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:stop:7"
EVENT = {"DeploymentId": "d-ABC123", "LifecycleEventHookExecutionId": "hook-exec-1"}


def load_hook() -> ModuleType:
    path = ROOT / "functions" / "pre_traffic_hook" / "app.py"
    spec = importlib.util.spec_from_file_location("pre_traffic_hook_app", path)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeLambda:
    """Lambda's Invoke of the new version, served by a handler in this process."""

    def __init__(self, handler: Callable[[dict[str, Any]], Any]) -> None:
        self.handler = handler
        self.invoked: list[str] = []

    def invoke(self, *, FunctionName: str, InvocationType: str, Payload: bytes) -> Any:
        assert InvocationType == "RequestResponse"
        self.invoked.append(FunctionName)
        answer = self.handler(json.loads(Payload))
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(answer).encode())}


class FakeCodeDeploy:
    def __init__(self) -> None:
        self.reports: list[dict[str, str]] = []

    def put_lifecycle_event_hook_execution_status(self, **report: str) -> None:
        self.reports.append(report)


def run_hook(stack: Stack, handler: Callable[[dict[str, Any]], Any]) -> tuple[str, Any, Any]:
    hook = load_hook()
    lambda_client, codedeploy = FakeLambda(handler), FakeCodeDeploy()
    clients = {
        "lambda": lambda_client,
        "codedeploy": codedeploy,
        "secretsmanager": stack.client("secretsmanager"),
    }
    env = {"TARGET_VERSION_ARN": VERSION_ARN, "SESSION_API_KEY_SECRET_ID": stack.secret_id}
    return hook.run(EVENT, clients, env), lambda_client, codedeploy


def test_a_working_version_passes_and_the_hook_reports_succeeded(
    seeded: Stack, lambda_handler: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lambda_client, codedeploy = run_hook(seeded, lambda_handler)

    assert status == "Succeeded"
    assert lambda_client.invoked == [VERSION_ARN] * 3, "the new version, never the alias"
    assert codedeploy.reports == [
        {
            "deploymentId": "d-ABC123",
            "lifecycleEventHookExecutionId": "hook-exec-1",
            "status": "Succeeded",
        }
    ]
    out = capsys.readouterr().out
    assert json.loads(out.splitlines()[-1])["event"] == "pre_traffic_passed"
    assert DEMO_SESSION_KEY not in out
    # Nothing was written: the unknown conversation stays unknown, no cancel was sent.
    items = seeded.client("dynamodb").scan(TableName=seeded.table_name)["Items"]
    assert not [i for i in items if i["conversation_id"]["S"].startswith("pre-traffic-")]
    sqs = seeded.client("sqs")
    assert not sqs.receive_message(QueueUrl=seeded.stack_queue_url).get("Messages")


def _answer(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "body": json.dumps(body), "headers": {}}


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        # A version that lets anyone stop: the key check is broken.
        (lambda event: _answer(200, {"message": "Conversation was not running"}), "without a key"),
        # A version that cannot read its key or its table: every stop refused or failed.
        (lambda event: _answer(401, {"detail": "Unauthorized"}), "with the key"),
        (lambda event: _answer(503, {"status": "error"}), "without a key"),
    ],
    ids=["open", "refuses-all", "failing"],
)
def test_a_broken_version_fails_the_deployment(
    stack: Stack, broken: Any, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, codedeploy = run_hook(stack, broken)

    assert status == "Failed"
    assert codedeploy.reports[0]["status"] == "Failed"
    logged = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert logged["event"] == "pre_traffic_failed"
    assert reason in logged["reason"]
    assert DEMO_SESSION_KEY not in json.dumps(logged)


def test_an_unexpected_error_still_reports_failed(stack: Stack) -> None:
    def crash(event: dict[str, Any]) -> Any:
        raise RuntimeError("the invoke failed")

    status, _, codedeploy = run_hook(stack, crash)
    assert status == "Failed"
    assert codedeploy.reports[0]["status"] == "Failed"


def test_the_hook_s_event_is_one_the_stop_route_answers(seeded: Stack, lambda_handler: Any) -> None:
    """The event shape is API Gateway's (HTTP API, 2.0): the real handler routes it."""
    hook = load_hook()
    answer = lambda_handler(hook.stop_event("demo-running", DEMO_SESSION_KEY))
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"])["message"] == "Conversation stopped successfully"


def test_the_key_is_read_from_either_secret_form() -> None:
    hook = load_hook()
    assert hook.session_key("  key \n") == "key"
    assert hook.session_key('{"session_api_key": " key "}') == "key"
