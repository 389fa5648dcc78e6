"""make smoke, as an operator runs it after a deploy: against moto's server (the stack, its
outputs in CloudFormation, a published version behind `live`) and the app served on
127.0.0.1, waiting for the loop's end as the stack's default StopWaitSeconds=5 makes it. The
smoke is the product's own worker for its duration. The key reaches it by the environment or
standard input, never a command line."""

from __future__ import annotations

import asyncio
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
from openhands_stop.wiring import build_service, build_worker
from openhands_stop.worker.settings import WorkerSettings

from local.emulation import AWS_DUMMY_ENV, DEMO_SESSION_KEY, ROOT, Stack
from tests.reliability.support import LiveServer
from tests.support import drain_queue
from tests.worker.support import cancel_for, send_raw

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


def route_settings(stack: Stack) -> RouteSettings:
    """The function's settings as the stack deploys them: StopWaitSeconds=5, its default."""
    return RouteSettings.from_environment(
        {**stack.function_environment(), "STOP_WAIT_SECONDS": "5"}
    )


@pytest.fixture
def served(wire_stack: Stack) -> Iterator[str]:
    with LiveServer(create_app(build_service(route_settings(wire_stack)))) as server:
        yield server.url


def worker_queues(stack: Stack) -> list[str]:
    sqs = stack.client("sqs")
    urls: list[str] = sqs.list_queues(QueueNamePrefix=stack.worker_queue_prefix).get(
        "QueueUrls", []
    )
    return urls


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


def test_smoke_runs_a_worker_whose_queue_carries_the_stop_out_confirmed(
    wire_stack: Stack, served: str, moto_endpoint: str
) -> None:
    stop_url = served + "/api/conversations/{conversation_id}/stop"
    register_stack(wire_stack, stop_url)

    result = make_smoke(moto_endpoint, f"URL={stop_url}")  # the stack found by its URL

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"live: version 1 ({LIVE_DESCRIPTION})" in out
    queue_url = out.split("own cancel queue: ", 1)[1].splitlines()[0]
    prefix = f"{moto_endpoint}/123456789012/{wire_stack.worker_queue_prefix}"
    assert queue_url.startswith(prefix), "the worker's own queue, under the prefix"
    claimed = out.split("claimed ", 1)[1].splitlines()[0]
    conversation_id = claimed.split(" ", 1)[0]
    assert conversation_id.startswith("smoke-")
    instance = claimed.split("worker instance ", 1)[1].split(")", 1)[0]
    assert queue_url == f"{prefix}{instance}.fifo", "the claim names the worker's instance"
    assert "without the key: 401" in out
    assert "with a wrong key: 401" in out
    assert "stop: 200 'Conversation stopped successfully' (was RUNNING)" in out
    assert "X-Stop-Confirmation: confirmed" in out, "the route saw the worker end the loop"
    assert "row: STOPPED, stop_id " in out
    assert "loop_stopped_via queue" in out
    assert f"cancel arrived on {queue_url}: the worker cancelled run " in out
    assert "smoke: ok" in out
    assert DEMO_SESSION_KEY not in out + result.stderr, "the key is never printed"
    # It cleans up: its row, its queue and its liveness item are gone; nothing went to the
    # stack queue (the cancel went to the worker's queue) nor to the dead-letter queue.
    items = wire_stack.client("dynamodb").scan(TableName=wire_stack.table_name)["Items"]
    assert [i["conversation_id"]["S"] for i in items] == []
    assert worker_queues(wire_stack) == []
    assert drain_queue(wire_stack) == []
    assert drain_queue(wire_stack, wire_stack.dead_letter_queue_url) == []


def test_smoke_forwards_a_fallback_cancel_for_a_peer_s_run_as_a_fleet_worker_does(
    wire_stack: Stack, served: str, moto_endpoint: str
) -> None:
    """The smoke is a worker of the fleet while it runs, so it drains the stack queue: a
    fallback cancel there for a live peer's run reaches the peer's queue as it was sent,
    never dropped, nor dead-lettered."""
    register_stack(wire_stack, served + "/api/conversations/{conversation_id}/stop")

    async def forever(_: str) -> None:
        await asyncio.Event().wait()

    async def scenario() -> tuple[Any, str, list[str]]:
        settings = WorkerSettings.model_validate(
            {
                "table_name": wire_stack.table_name,
                "stack_queue_url": wire_stack.stack_queue_url,
                "worker_queue_prefix": wire_stack.worker_queue_prefix,
                "worker_id": "peer",
            }
        )
        peer = build_worker(settings)
        await peer.open()  # in the roster, with its queue; it polls nothing itself
        try:
            await peer.register("peer-conversation")
            await peer.start("peer-conversation", forever)
            body = cancel_for("peer-conversation", "peer-stop", peer.run_id("peer-conversation"))
            send_raw(wire_stack, wire_stack.stack_queue_url, body, dedup="peer-stop")
            result = await asyncio.to_thread(
                make_smoke, moto_endpoint, f"URL={served}", f"STACK={STACK_NAME}"
            )
            received = wire_stack.client("sqs").receive_message(
                QueueUrl=peer.queue_url, MaxNumberOfMessages=10
            )
            return result, body, [m["Body"] for m in received.get("Messages", [])]
        finally:
            await peer.aclose()

    result, body, forwarded = asyncio.run(scenario())

    assert result.returncode == 0, result.stdout + result.stderr
    assert forwarded == [body], "forwarded to the run's holder as it was sent"
    assert drain_queue(wire_stack) == []
    assert drain_queue(wire_stack, wire_stack.dead_letter_queue_url) == []
    assert worker_queues(wire_stack) == []


def test_smoke_fails_with_a_wrong_key_and_never_prints_it(
    wire_stack: Stack, served: str, moto_endpoint: str
) -> None:
    register_stack(wire_stack, served + "/api/conversations/{conversation_id}/stop")
    wrong = "wrong-key-" + "x" * 30

    result = make_smoke(moto_endpoint, f"URL={served}", key=wrong)

    assert result.returncode != 0
    assert "smoke: FAILED: the stop answered 401" in result.stderr
    assert wrong not in result.stdout + result.stderr
    assert worker_queues(wire_stack) == [], "its worker's queue is deleted when it fails"


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


def test_smoke_fails_when_no_cancel_arrives(wire_stack: Stack, moto_endpoint: str) -> None:
    """A stop that records STOPPED but whose cancel goes nowhere: the worker's queue never
    carries it out (its backstop may, later), and the smoke says so."""
    service = build_service(route_settings(wire_stack))
    service.cancels._client.send_message = lambda **_: {"MessageId": "lost"}  # type: ignore[attr-defined]
    with LiveServer(create_app(service)) as server:
        register_stack(wire_stack, server.url + "/api/conversations/{conversation_id}/stop")
        result = make_smoke(moto_endpoint, f"URL={server.url}")
    assert result.returncode != 0
    assert "smoke: ok" not in result.stdout
    assert "no cancel for smoke-" in result.stderr
    assert worker_queues(wire_stack) == [], "its worker's queue is deleted even when it fails"
    items = wire_stack.client("dynamodb").scan(TableName=wire_stack.table_name)["Items"]
    assert [i["conversation_id"]["S"] for i in items] == []
