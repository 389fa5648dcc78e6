"""After a deploy: run a conversation as a worker would, stop it, and show its cancel arrived.

    KEY=<session key> make smoke URL=<StopUrl> [STACK=<stack name>]
    <command printing the key> | make smoke URL=<StopUrl> [STACK=<stack name>]

1. reads the stack's outputs (ConversationsTableName, CancelQueueUrl, WorkerQueuePrefix,
   StopFunctionAlias): of STACK, or of the stack whose StopUrl output is on URL's host, and
   reports which version `live` serves (its number and description);
2. creates a cancel queue of its own under WorkerQueuePrefix, shaped like the stack's (as a
   worker creates its queue: same attributes, the policy rewritten for its ARN);
3. registers a new conversation (``smoke-<random>``, STARTING) and claims it as a worker
   does (one conditional UpdateItem: RUNNING, its run, its worker id, its queue);
4. checks that a stop without the key and one with a wrong key are refused (401), then stops
   it with the key (200, "Conversation stopped successfully", previous status RUNNING) and
   that the row is STOPPED;
5. receives the cancel on its own queue (naming its run), then deletes the queue and the row.

It never touches the stack queue, so other conversations' cancels are never received (and
never counted towards their ``maxReceiveCount``). The key comes from the environment
(``KEY``) or the first line of standard input (a prompt without echo on a terminal), never
from a command line, and is never printed.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import secrets
import sys
import time
from datetime import UTC, datetime
from typing import Any

import boto3
import httpx
from openhands_stop.aws.worker_queues import INHERITED_ATTRIBUTES

STOP_PATH = "/api/conversations/{conversation_id}/stop"
STOPPED = "Conversation stopped successfully"
WORKER_ID = "make-smoke"
# The stack queue's attributes a worker's queue takes, as the worker copies them.
QUEUE_ATTRIBUTES = INHERITED_ATTRIBUTES


class SmokeFailed(Exception):
    """One step did not do what a working deployment does."""


def stop_url(url: str, conversation_id: str) -> str:
    """The stop URL for ``conversation_id``: from the StopUrl output (with its placeholder)
    or from the API's base URL."""
    if "{conversation_id}" in url:
        return url.replace("{conversation_id}", conversation_id)
    return url.rstrip("/") + STOP_PATH.format(conversation_id=conversation_id)


def stack_outputs(stack: str | None, url: str) -> dict[str, str]:
    """The outputs of ``stack``, or of the one stack whose StopUrl is on ``url``'s host."""
    cloudformation = boto3.client("cloudformation")
    if stack:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    else:
        pages = cloudformation.get_paginator("describe_stacks").paginate()
        stacks = [s for page in pages for s in page["Stacks"]]
    found = []
    for described in stacks:
        outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in described.get("Outputs", [])}
        if stack or _host(outputs.get("StopUrl", "")) == _host(url):
            found.append(outputs)
    if len(found) != 1:
        raise SmokeFailed(f"{len(found)} stacks serve {_host(url)}: name one with STACK=")
    return found[0]


def _host(url: str) -> str:
    """Host and port: each API has its own host, and a local server its own port."""
    return httpx.URL(url.replace("{conversation_id}", "x")).netloc.decode() if url else ""


def run(
    url: str, key: str, stack: str | None, wait_seconds: float, say: Any = print
) -> dict[str, Any]:
    outputs = stack_outputs(stack, url)
    try:
        table_name = outputs["ConversationsTableName"]
        stack_queue_url = outputs["CancelQueueUrl"]
        prefix = outputs["WorkerQueuePrefix"]
    except KeyError as missing:
        raise SmokeFailed(f"stack {stack or ''} has no output {missing}") from None
    say(f"live: {live_version(outputs.get('StopFunctionAlias'))}")
    queue_url = create_own_queue(stack_queue_url, prefix)
    say(f"own cancel queue: {queue_url}")
    dynamodb = boto3.client("dynamodb")
    conversation_id = f"smoke-{secrets.token_hex(6)}"
    run_id = f"smoke-run-{secrets.token_hex(8)}"
    try:
        _register_and_claim(dynamodb, table_name, conversation_id, run_id, queue_url)
        say(f"claimed {conversation_id} (RUNNING, run {run_id}) in {table_name}")
        return _stop_and_receive(
            stop_url(url, conversation_id),
            key,
            conversation_id=conversation_id,
            run_id=run_id,
            table_name=table_name,
            queue_url=queue_url,
            wait_seconds=wait_seconds,
            say=say,
        )
    finally:
        dynamodb.delete_item(TableName=table_name, Key={"conversation_id": {"S": conversation_id}})
        boto3.client("sqs").delete_queue(QueueUrl=queue_url)


def live_version(alias_arn: str | None) -> str:
    """The version `live` serves, and its description (what published it)."""
    if not alias_arn:
        return "unknown (the stack has no StopFunctionAlias output)"
    configuration = boto3.client("lambda").get_function_configuration(FunctionName=alias_arn)
    return f"version {configuration['Version']} ({configuration.get('Description', '')})"


def create_own_queue(stack_queue_url: str, prefix: str) -> str:
    """A queue under the workers' prefix, shaped like the stack's, as a worker creates its
    own: the stop route sends a claimed run's cancel there, and to nobody else."""
    sqs = boto3.client("sqs")
    stack = sqs.get_queue_attributes(QueueUrl=stack_queue_url, AttributeNames=["All"])
    attributes: dict[str, str] = {str(k): v for k, v in stack.get("Attributes", {}).items()}
    name = f"{prefix}{secrets.token_hex(6)}.fifo"
    own: dict[str, str] = {"FifoQueue": "true"}
    own.update({k: attributes[k] for k in QUEUE_ATTRIBUTES if attributes.get(k)})
    stack_arn = attributes.get("QueueArn", "")
    if "Policy" in own and stack_arn:
        # The stack queue's ARN appears in its policy only as each statement's Resource.
        own["Policy"] = own["Policy"].replace(stack_arn, f"{stack_arn.rsplit(':', 1)[0]}:{name}")
    request: Any = {"QueueName": name, "Attributes": own}
    url: str = sqs.create_queue(**request)["QueueUrl"]
    return url


def _register_and_claim(
    dynamodb: Any, table_name: str, conversation_id: str, run_id: str, queue_url: str
) -> None:
    """A worker's register (a new STARTING row) and claim (STARTING -> RUNNING, with its run,
    its worker id and its queue), each one conditional write."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    key = {"conversation_id": {"S": conversation_id}}
    dynamodb.update_item(
        TableName=table_name,
        Key=key,
        UpdateExpression="SET #status = :starting, registered_at = :now, updated_at = :now "
        "ADD version :one",
        ConditionExpression="attribute_not_exists(#status)",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={
            ":starting": {"S": "STARTING"},
            ":now": {"S": now},
            ":one": {"N": "1"},
        },
    )
    dynamodb.update_item(
        TableName=table_name,
        Key=key,
        UpdateExpression="SET #status = :running, run_id = :run, worker_id = :worker, "
        "cancel_queue_url = :queue, claimed_at = :now, updated_at = :now ADD version :one",
        ConditionExpression="#status = :starting",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={
            ":running": {"S": "RUNNING"},
            ":starting": {"S": "STARTING"},
            ":run": {"S": run_id},
            ":worker": {"S": WORKER_ID},
            ":queue": {"S": queue_url},
            ":now": {"S": now},
            ":one": {"N": "1"},
        },
    )


def _stop_and_receive(
    url: str,
    key: str,
    *,
    conversation_id: str,
    run_id: str,
    table_name: str,
    queue_url: str,
    wait_seconds: float,
    say: Any,
) -> dict[str, Any]:
    with httpx.Client(timeout=30) as client:
        refused = client.post(url)
        if refused.status_code != 401:
            raise SmokeFailed(f"a stop without the key answered {refused.status_code}, not 401")
        say("without the key: 401")
        wrong = "smoke-wrong-key-" + secrets.token_hex(16)
        refused = client.post(url, headers={"X-Session-API-Key": wrong})
        if refused.status_code != 401:
            raise SmokeFailed(f"a stop with a wrong key answered {refused.status_code}, not 401")
        say("with a wrong key: 401")
        started = time.monotonic()
        response = client.post(url, headers={"X-Session-API-Key": key})
        elapsed_ms = (time.monotonic() - started) * 1000
    body = _json(response)
    if response.status_code != 200 or body.get("message") != STOPPED:
        raise SmokeFailed(f"the stop answered {response.status_code} {body}")
    if body.get("conversation_status") != "RUNNING":
        raise SmokeFailed(f"the stop saw {body.get('conversation_status')}, not RUNNING")
    say(f"stop: 200 {STOPPED!r} (was RUNNING) in {elapsed_ms:.0f} ms")
    row = boto3.client("dynamodb").get_item(
        TableName=table_name, Key={"conversation_id": {"S": conversation_id}}, ConsistentRead=True
    )["Item"]
    if row["status"]["S"] != "STOPPED":
        raise SmokeFailed(f"the row is {row['status']['S']}, not STOPPED")
    stop_id = row.get("stop_id", {}).get("S")
    say(f"row: STOPPED, stop_id {stop_id}")
    cancel = _receive_cancel(queue_url, conversation_id, wait_seconds)
    if cancel.get("stop_id") != stop_id:
        raise SmokeFailed(f"the cancel's stop_id {cancel.get('stop_id')} is not the row's")
    if cancel.get("run_id") not in (None, run_id):
        raise SmokeFailed(f"the cancel names run {cancel.get('run_id')}, not {run_id}")
    say(f"cancel arrived on {queue_url}: {json.dumps(cancel, sort_keys=True)}")
    say("smoke: ok")
    return {"conversation_id": conversation_id, "stop_id": stop_id, "cancel": cancel}


def _receive_cancel(queue_url: str, conversation_id: str, wait_seconds: float) -> dict[str, Any]:
    sqs = boto3.client("sqs")
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        poll = max(1, min(20, int(deadline - time.monotonic())))
        received = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=poll
        ).get("Messages", [])
        for message in received:  # the queue is the smoke's own: nobody else's cancels
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            cancel = _json_text(message["Body"])
            if cancel.get("sid") == conversation_id:
                return cancel
    raise SmokeFailed(
        f"no cancel for {conversation_id} on its own queue {queue_url} within "
        f"{wait_seconds:.0f} s (the function's log line for the stop says where it sent it)"
    )


def read_key() -> str:
    """``KEY`` from the environment, else standard input's first line (without echo on a
    terminal): never an argument, which any process on the machine could read."""
    key = os.environ.get("KEY", "").strip()
    if key:
        return key
    if sys.stdin is None:
        return ""
    if sys.stdin.isatty():
        return getpass.getpass("session key: ").strip()
    return sys.stdin.readline().strip()


def _json(response: httpx.Response) -> dict[str, Any]:
    return _json_text(response.text)


def _json_text(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the StopUrl output, or the API's base URL")
    parser.add_argument("--stack", help="the stack's name (default: the one serving --url)")
    parser.add_argument("--wait", type=float, default=30, help="seconds to wait for the cancel")
    args = parser.parse_args(argv)
    key = read_key()
    if not key:
        print("smoke: no key: export KEY, or give the key on standard input", file=sys.stderr)
        return 2
    try:
        run(args.url, key, args.stack, args.wait)
    except SmokeFailed as failed:
        print(f"smoke: FAILED: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
