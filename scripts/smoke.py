"""After a deploy: stop a conversation this script registers, and show its cancel arrived.

    make smoke URL=<StopUrl> KEY=<session key> [STACK=<stack name>]

1. reads the stack's outputs (ConversationsTableName, CancelQueueUrl): of STACK, or of the
   stack whose StopUrl output is on URL's host;
2. puts a STARTING row for a new conversation id (``smoke-<random>``), as a worker's
   ``register`` does;
3. checks that a stop without the key is refused (401), then stops it with the key (200,
   "Conversation stopped successfully", previous status STARTING) and that the row is STOPPED;
4. receives from the stack's CancelQueue until this conversation's cancel arrives (a
   never-claimed conversation's cancel goes there), deletes it, and deletes the row.

Other cancels it receives meanwhile are handed back at once (visibility 0). A worker draining
the stack queue may take the cancel first: the script then fails after ``--wait`` seconds and
says so. The key is read from the environment (``KEY``) and is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from datetime import UTC, datetime
from typing import Any

import boto3
import httpx

STOP_PATH = "/api/conversations/{conversation_id}/stop"
STOPPED = "Conversation stopped successfully"


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
        queue_url = outputs["CancelQueueUrl"]
    except KeyError as missing:
        raise SmokeFailed(f"stack {stack} has no output {missing}") from None
    dynamodb = boto3.client("dynamodb")
    conversation_id = f"smoke-{secrets.token_hex(6)}"
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    dynamodb.put_item(
        TableName=table_name,
        Item={
            "conversation_id": {"S": conversation_id},
            "status": {"S": "STARTING"},
            "registered_at": {"S": now},
            "updated_at": {"S": now},
            "version": {"N": "0"},
        },
        ConditionExpression="attribute_not_exists(conversation_id)",
    )
    say(f"registered {conversation_id} (STARTING) in {table_name}")
    try:
        return _stop_and_receive(
            stop_url(url, conversation_id),
            key,
            conversation_id=conversation_id,
            table_name=table_name,
            queue_url=queue_url,
            wait_seconds=wait_seconds,
            say=say,
        )
    finally:
        dynamodb.delete_item(TableName=table_name, Key={"conversation_id": {"S": conversation_id}})


def _stop_and_receive(
    url: str,
    key: str,
    *,
    conversation_id: str,
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
        started = time.monotonic()
        response = client.post(url, headers={"X-Session-API-Key": key})
        elapsed_ms = (time.monotonic() - started) * 1000
    body = _json(response)
    if response.status_code != 200 or body.get("message") != STOPPED:
        raise SmokeFailed(f"the stop answered {response.status_code} {body}")
    if body.get("conversation_status") != "STARTING":
        raise SmokeFailed(f"the stop saw {body.get('conversation_status')}, not STARTING")
    say(f"stop: 200 {STOPPED!r} (was STARTING) in {elapsed_ms:.0f} ms")
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
        for message in received:
            cancel = _json_text(message["Body"])
            if cancel.get("sid") == conversation_id:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                return cancel
            # Another conversation's cancel: back to the queue at once, for its worker.
            sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
    raise SmokeFailed(
        f"no cancel for {conversation_id} on {queue_url} within {wait_seconds:.0f} s "
        "(a worker draining the stack queue may have taken it: see its cancel_handled log)"
    )


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
    key = os.environ.get("KEY", "")
    if not key:
        print("smoke: set KEY to the session key (make smoke ... KEY=...)", file=sys.stderr)
        return 2
    try:
        run(args.url, key, args.stack, args.wait)
    except SmokeFailed as failed:
        print(f"smoke: FAILED: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
