"""make smoke, as an operator runs it after a deploy: against moto's server (the stack, its
outputs in CloudFormation, a published version behind `live`) and the app served on
127.0.0.1. The key reaches it by the environment or standard input, never a command line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from openhands_stop.edge.app import create_app
from openhands_stop.edge.settings import RouteSettings
from openhands_stop.wiring import build_service

from local.emulation import AWS_DUMMY_ENV, DEMO_SESSION_KEY, ROOT, Stack
from tests.reliability.support import LiveServer
from tests.support import drain_queue

STACK_NAME = "openhands-stop-smoke"


@pytest.fixture(autouse=True)
def no_stacks_left(moto_endpoint: str, wire_stack: Stack) -> Iterator[None]:
    """moto's server outlives the test: its stacks must not (the smoke finds one by URL)."""
    yield
    cloudformation = wire_stack.client("cloudformation")
    for described in cloudformation.describe_stacks()["Stacks"]:
        cloudformation.delete_stack(StackName=described["StackName"])


LIVE_DESCRIPTION = "layer 3 table ABC queue x-cancel.fifo key DEF log INFO"


def publish_live(stack: Stack) -> str:
    """A function with version 1 published behind `live`, as the stack's; the alias's ARN."""
    lambda_client = stack.client("lambda")
    role = stack.client("iam").create_role(
        RoleName=f"smoke-{uuid.uuid4().hex[:8]}",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("app.py", "def handler(event, context):\n    return {}\n")
    name = f"stop-{uuid.uuid4().hex[:8]}"
    lambda_client.create_function(
        FunctionName=name,
        Runtime="python3.13",
        Role=role,
        Handler="app.handler",
        Code={"ZipFile": archive.getvalue()},
    )
    version = lambda_client.publish_version(FunctionName=name, Description=LIVE_DESCRIPTION)
    alias = lambda_client.create_alias(
        FunctionName=name, Name="live", FunctionVersion=version["Version"]
    )
    arn: str = alias["AliasArn"]
    return arn


def register_stack(stack: Stack, stop_url: str, name: str = STACK_NAME) -> None:
    """A CloudFormation stack in moto whose outputs are the deployed stack's, by name."""
    outputs = {
        "StopUrl": stop_url,
        "ConversationsTableName": stack.table_name,
        "CancelQueueUrl": stack.stack_queue_url,
        "WorkerQueuePrefix": stack.worker_queue_prefix,
        "StopFunctionAlias": publish_live(stack),
    }
    template = {
        # A stack needs a resource; the smoke reads only the outputs.
        "Resources": {"Marker": {"Type": "AWS::Logs::LogGroup"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    stack.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))


@pytest.fixture
def served(wire_stack: Stack, wire_settings: RouteSettings) -> Iterator[str]:
    with LiveServer(create_app(build_service(wire_settings))) as server:
        yield server.url


def make_smoke(
    endpoint: str, *args: str, key: str | None = DEMO_SESSION_KEY, stdin: str | None = None
) -> Any:
    """`KEY=... make smoke ...`: the key in make's environment, not on its command line."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "KEY"},
        **AWS_DUMMY_ENV,
        "AWS_ENDPOINT_URL": endpoint,
    }
    if key is not None:
        env["KEY"] = key
    return subprocess.run(
        ["make", "--no-print-directory", "smoke", *args, "WAIT=5"],
        cwd=ROOT,
        env=env,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_smoke_stops_a_conversation_it_registers_and_receives_its_cancel(
    wire_stack: Stack, served: str, moto_endpoint: str
) -> None:
    stop_url = served + "/api/conversations/{conversation_id}/stop"
    register_stack(wire_stack, stop_url)

    result = make_smoke(moto_endpoint, f"URL={stop_url}")  # the stack found by its URL

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"live: version 1 ({LIVE_DESCRIPTION})" in out
    assert f"own cancel queue: {moto_endpoint}/123456789012/{wire_stack.worker_queue_prefix}" in out
    assert "without the key: 401" in out
    assert "with a wrong key: 401" in out
    assert "stop: 200 'Conversation stopped successfully' (was RUNNING)" in out
    assert "row: STOPPED" in out
    cancel = json.loads(out.split("cancel arrived on ", 1)[1].split(": ", 1)[1].splitlines()[0])
    assert cancel["message_type"] == "close_session"
    assert cancel["sid"].startswith("smoke-")
    assert cancel["run_id"].startswith("smoke-run-"), "the run its claim started"
    assert "smoke: ok" in out
    assert DEMO_SESSION_KEY not in out + result.stderr, "the key is never printed"
    # It cleans up: its row and its queue are gone; the stack queue was never touched.
    items = wire_stack.client("dynamodb").scan(TableName=wire_stack.table_name)["Items"]
    assert not [i for i in items if i["conversation_id"]["S"] == cancel["sid"]]
    sqs = wire_stack.client("sqs")
    queues = sqs.list_queues(QueueNamePrefix=wire_stack.worker_queue_prefix).get("QueueUrls", [])
    assert queues == []
    assert drain_queue(wire_stack) == []


def test_smoke_gives_its_queue_the_stack_queue_s_shape(
    wire_stack: Stack, served: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Created as a worker creates its queue: FIFO, the stack queue's attributes."""
    from scripts import smoke

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    url = smoke.create_own_queue(wire_stack.stack_queue_url, wire_stack.worker_queue_prefix)
    try:
        sqs = wire_stack.client("sqs")
        own = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        stack = sqs.get_queue_attributes(
            QueueUrl=wire_stack.stack_queue_url, AttributeNames=["All"]
        )["Attributes"]
        assert own["FifoQueue"] == "true"
        assert own["RedrivePolicy"] == stack["RedrivePolicy"]
        name = url.rsplit("/", 1)[1]
        assert name.startswith(wire_stack.worker_queue_prefix)
        assert name.endswith(".fifo")
        assert len(name) == len(wire_stack.worker_queue_prefix) + 12 + len(".fifo")
    finally:
        wire_stack.client("sqs").delete_queue(QueueUrl=url)


def test_smoke_never_receives_other_conversations_cancels(
    wire_stack: Stack, served: str, moto_endpoint: str
) -> None:
    """Foreign cancels on the stack queue are never received: none counts towards its
    maxReceiveCount (five smoke runs used to send them to the dead-letter queue)."""
    register_stack(wire_stack, served + "/api/conversations/{conversation_id}/stop")
    sqs = wire_stack.client("sqs")
    other = {"message_type": "close_session", "sid": "someone-else", "stop_id": "s1"}
    sqs.send_message(
        QueueUrl=wire_stack.stack_queue_url,
        MessageBody=json.dumps(other),
        MessageGroupId="someone-else",
        MessageDeduplicationId="s1",
    )

    for _ in range(2):
        result = make_smoke(moto_endpoint, f"URL={served}", f"STACK={STACK_NAME}")
        assert result.returncode == 0, result.stdout + result.stderr
    received = wire_stack.client("sqs").receive_message(
        QueueUrl=wire_stack.stack_queue_url, AttributeNames=["ApproximateReceiveCount"]
    )["Messages"]
    assert [json.loads(m["Body"])["sid"] for m in received] == ["someone-else"]
    assert received[0]["Attributes"]["ApproximateReceiveCount"] == "1", "this is its first"


def test_smoke_fails_with_a_wrong_key_and_never_prints_it(
    wire_stack: Stack, served: str, moto_endpoint: str
) -> None:
    register_stack(wire_stack, served + "/api/conversations/{conversation_id}/stop")
    wrong = "wrong-key-" + "x" * 30

    result = make_smoke(moto_endpoint, f"URL={served}", key=wrong)

    assert result.returncode != 0
    assert "smoke: FAILED: the stop answered 401" in result.stderr
    assert wrong not in result.stdout + result.stderr


def test_smoke_reads_the_key_from_standard_input(
    wire_stack: Stack, served: str, moto_endpoint: str
) -> None:
    """`... get-secret-value ... | make smoke URL=...`: the key on no command line at all."""
    register_stack(wire_stack, served + "/api/conversations/{conversation_id}/stop")
    result = make_smoke(moto_endpoint, f"URL={served}", key=None, stdin=DEMO_SESSION_KEY + "\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smoke: ok" in result.stdout


def test_smoke_refuses_the_key_on_make_s_command_line(moto_endpoint: str) -> None:
    """`make smoke KEY=...` would show the key in ps: refused before anything runs."""
    result = make_smoke(moto_endpoint, "URL=http://127.0.0.1:9", "KEY=" + "k" * 40, key=None)
    assert result.returncode != 0
    assert "shows in ps" in result.stderr
    assert "k" * 40 not in result.stdout + result.stderr


def test_smoke_fails_when_no_cancel_arrives(
    wire_stack: Stack,
    wire_settings: RouteSettings,
    moto_endpoint: str,
) -> None:
    """A stop that records STOPPED but whose cancel goes nowhere the smoke reads."""
    service = build_service(wire_settings)
    service.cancels._client.send_message = lambda **_: {"MessageId": "lost"}  # type: ignore[attr-defined]
    with LiveServer(create_app(service)) as server:
        register_stack(wire_stack, server.url + "/api/conversations/{conversation_id}/stop")
        result = make_smoke(moto_endpoint, f"URL={server.url}")
    assert result.returncode != 0
    assert "no cancel for smoke-" in result.stderr
    assert (
        not wire_stack.client("sqs")
        .list_queues(QueueNamePrefix=wire_stack.worker_queue_prefix)
        .get("QueueUrls")
    ), "its queue is deleted even when it fails"
