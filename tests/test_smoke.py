"""make smoke, as an operator runs it after a deploy: against moto's server (the stack, its
outputs in CloudFormation) and the app served on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from openhands_stop.edge.app import create_app
from openhands_stop.edge.settings import Settings
from openhands_stop.wiring import build_service

from local.emulation import AWS_DUMMY_ENV, DEMO_SESSION_KEY, ROOT, Stack
from tests.reliability.conftest import LiveServer
from tests.support import drain_queue

STACK_NAME = "openhands-stop-smoke"


@pytest.fixture(autouse=True)
def no_stacks_left(moto_endpoint: str, wire_stack: Stack) -> Iterator[None]:
    """moto's server outlives the test: its stacks must not (the smoke finds one by URL)."""
    yield
    cloudformation = wire_stack.client("cloudformation")
    for described in cloudformation.describe_stacks()["Stacks"]:
        cloudformation.delete_stack(StackName=described["StackName"])


def register_stack(stack: Stack, stop_url: str, name: str = STACK_NAME) -> None:
    """A CloudFormation stack in moto whose outputs are the deployed stack's, by name."""
    outputs = {
        "StopUrl": stop_url,
        "ConversationsTableName": stack.table_name,
        "CancelQueueUrl": stack.queue_url,
    }
    template = {
        # A stack needs a resource; the smoke reads only the outputs.
        "Resources": {"Marker": {"Type": "AWS::Logs::LogGroup"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    stack.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))


@pytest.fixture
def served(wire_stack: Stack, wire_settings: Settings) -> Iterator[str]:
    with LiveServer(create_app(build_service(wire_settings))) as server:
        yield server.url


def make_smoke(endpoint: str, *args: str, key: str = DEMO_SESSION_KEY) -> Any:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **AWS_DUMMY_ENV,
        "AWS_ENDPOINT_URL": endpoint,
    }
    return subprocess.run(
        ["make", "--no-print-directory", "smoke", *args, f"KEY={key}", "WAIT=5"],
        cwd=ROOT,
        env=env,
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
    assert "without the key: 401" in out
    assert "stop: 200 'Conversation stopped successfully' (was STARTING)" in out
    assert "row: STOPPED" in out
    cancel = json.loads(out.split("cancel arrived on ", 1)[1].split(": ", 1)[1].splitlines()[0])
    assert cancel["message_type"] == "close_session"
    assert cancel["sid"].startswith("smoke-")
    assert "smoke: ok" in out
    assert DEMO_SESSION_KEY not in out + result.stderr, "the key is never printed"
    # It cleans up: its row is gone and its cancel consumed.
    items = wire_stack.client("dynamodb").scan(TableName=wire_stack.table_name)["Items"]
    assert not [i for i in items if i["conversation_id"]["S"] == cancel["sid"]]
    assert drain_queue(wire_stack) == []


def test_smoke_hands_other_cancels_back_to_the_queue(
    wire_stack: Stack, served: str, moto_endpoint: str
) -> None:
    register_stack(wire_stack, served + "/api/conversations/{conversation_id}/stop")
    sqs = wire_stack.client("sqs")
    other = {"message_type": "close_session", "sid": "someone-else", "stop_id": "s1"}
    sqs.send_message(
        QueueUrl=wire_stack.queue_url,
        MessageBody=json.dumps(other),
        MessageGroupId="someone-else",
        MessageDeduplicationId="s1",
    )

    result = make_smoke(moto_endpoint, f"URL={served}", f"STACK={STACK_NAME}")

    assert result.returncode == 0, result.stdout + result.stderr
    assert [m["sid"] for m in drain_queue(wire_stack)] == ["someone-else"]


def test_smoke_fails_with_a_wrong_key_and_never_prints_it(
    wire_stack: Stack, served: str, moto_endpoint: str
) -> None:
    register_stack(wire_stack, served + "/api/conversations/{conversation_id}/stop")
    wrong = "wrong-key-" + "x" * 30

    result = make_smoke(moto_endpoint, f"URL={served}", key=wrong)

    assert result.returncode != 0
    assert "smoke: FAILED: the stop answered 401" in result.stderr
    assert wrong not in result.stdout + result.stderr


def test_smoke_fails_when_no_cancel_arrives(
    wire_stack: Stack,
    wire_settings: Settings,
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
