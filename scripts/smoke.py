"""After a deploy: run a conversation as a worker of the fleet, stop it, and show the worker
carried the stop out.

    KEY=<session key> make smoke URL=<StopUrl> [STACK=<stack name>]
    <command printing the key> | make smoke URL=<StopUrl> [STACK=<stack name>]

1. reads the stack's outputs (ConversationsTableName, CancelQueueUrl, WorkerQueuePrefix,
   StopFunctionAlias): of STACK, or of the stack whose StopUrl output is on URL's host, and
   reports which version `live` serves (its number and description);
2. starts the product's own worker (``wiring.build_worker``) with those resources: it joins
   the roster, creates its own cancel queue under WorkerQueuePrefix and polls it;
3. registers a new conversation (``smoke-<random>``, STARTING) and starts a loop for it with
   the worker, which claims it (RUNNING, its run, its worker id and instance, its queue);
4. checks that a stop without the key and one with a wrong key are refused (401), then stops
   it with the key (200, "Conversation stopped successfully", previous status RUNNING);
5. checks that the worker cancelled the loop because its cancel arrived on the worker's
   queue, that the row is STOPPED with ``loop_stopped_via: queue``, and that the answer's
   ``X-Stop-Confirmation`` is ``confirmed`` (absent or ``not-waited`` when the stack's
   StopWaitSeconds is 0; ``unconfirmed`` or ``worker-lost`` fail);
6. closes the worker (its queue and liveness item are deleted), then deletes the row.

For its duration the smoke is a worker of the fleet, which is what it checks: like every
fleet worker it also drains the stack queue, so a fallback cancel there for another live
worker's run is forwarded to that worker's queue, not dropped, and a cancel for a
conversation nobody claimed is deleted, as any worker would. It touches no message beyond
what a worker does. The key comes from the environment (``KEY``) or the first line of
standard input (a prompt without echo on a terminal), never from a command line, and is
never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import secrets
import sys
import time
from typing import Any

import boto3
import httpx
from openhands_stop.wiring import build_worker
from openhands_stop.worker.settings import WorkerSettings, default_worker_id

STOP_PATH = "/api/conversations/{conversation_id}/stop"
STOPPED = "Conversation stopped successfully"
WORKER_ID = "make-smoke"
CONFIRMATION_HEADER = "X-Stop-Confirmation"
# What the answer may say with the stack's StopWaitSeconds at 0: no header, or not-waited.
CONFIRMATIONS_ACCEPTED = (None, "confirmed", "not-waited")


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
    if not prefix:
        raise SmokeFailed("the stack's WorkerQueuePrefix is empty: no fleet worker to be")
    say(f"live: {live_version(outputs.get('StopFunctionAlias'))}")
    settings = WorkerSettings.model_validate(
        {
            "table_name": table_name,
            "stack_queue_url": stack_queue_url,
            "worker_queue_prefix": prefix,
            "worker_id": f"{WORKER_ID}-{default_worker_id()}",
        }
    )
    conversation_id = f"smoke-{secrets.token_hex(6)}"
    try:
        return asyncio.run(
            _as_worker(
                settings,
                stop_url(url, conversation_id),
                key,
                conversation_id=conversation_id,
                wait_seconds=wait_seconds,
                say=say,
            )
        )
    finally:
        boto3.client("dynamodb").delete_item(
            TableName=table_name, Key={"conversation_id": {"S": conversation_id}}
        )


def live_version(alias_arn: str | None) -> str:
    """The version `live` serves, and its description (what published it)."""
    if not alias_arn:
        return "unknown (the stack has no StopFunctionAlias output)"
    configuration = boto3.client("lambda").get_function_configuration(FunctionName=alias_arn)
    return f"version {configuration['Version']} ({configuration.get('Description', '')})"


async def _as_worker(
    settings: WorkerSettings,
    url: str,
    key: str,
    *,
    conversation_id: str,
    wait_seconds: float,
    say: Any,
) -> dict[str, Any]:
    """The worker's part: claim a run, stop it over HTTP, see the worker carry it out.
    Leaving ``async with`` deletes the worker's queue and liveness item, passed or failed."""
    cancelled = asyncio.Event()

    async def loop(_: str) -> None:
        """An agent loop that runs until its worker cancels it, and notes that it did."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    table_name = settings.table_name
    async with build_worker(settings) as worker:
        queue_url = worker.queue_url
        say(f"own cancel queue: {queue_url}")
        await worker.register(conversation_id)
        task = await worker.start(conversation_id, loop)
        run_id = worker.run_id(conversation_id)
        row = await asyncio.to_thread(_row, table_name, conversation_id)
        claimed = {k: row.get(k, {}).get("S") for k in ("status", "worker_instance", "run_id")}
        if claimed != {"status": "RUNNING", "worker_instance": worker.instance, "run_id": run_id}:
            raise SmokeFailed(f"the claimed row says {claimed}, not this worker's run")
        say(
            f"claimed {conversation_id} (RUNNING, run {run_id}, worker instance "
            f"{worker.instance}) in {table_name}"
        )
        response, elapsed_ms = await asyncio.to_thread(_send_stops, url, key, say)
        body = _json(response)
        if response.status_code != 200 or body.get("message") != STOPPED:
            raise SmokeFailed(f"the stop answered {response.status_code} {body}")
        if body.get("conversation_status") != "RUNNING":
            raise SmokeFailed(f"the stop saw {body.get('conversation_status')}, not RUNNING")
        confirmation = response.headers.get(CONFIRMATION_HEADER)
        say(
            f"stop: 200 {STOPPED!r} (was RUNNING) in {elapsed_ms:.0f} ms, "
            f"{CONFIRMATION_HEADER}: {confirmation or '(none)'}"
        )
        deadline = time.monotonic() + wait_seconds
        await asyncio.wait({task}, timeout=wait_seconds)
        if not task.done():
            raise SmokeFailed(
                f"no cancel for {conversation_id} on its own queue {queue_url} within "
                f"{wait_seconds:.0f} s: the loop still runs (the function's log line for the "
                "stop says where it sent the cancel)"
            )
        if not cancelled.is_set():
            raise SmokeFailed(f"the loop of {conversation_id} ended without being cancelled")
        row = await _ended_row(table_name, conversation_id, deadline)
        via = row.get("loop_stopped_via", {}).get("S")
        if via != "queue":
            raise SmokeFailed(
                f"no cancel for {conversation_id} arrived on its own queue {queue_url}: the "
                f"worker stopped the loop via {via} (the function's log line for the stop "
                "says where it sent the cancel)"
            )
        if row["status"]["S"] != "STOPPED":
            raise SmokeFailed(f"the row is {row['status']['S']}, not STOPPED")
        stop_id = row.get("stop_id", {}).get("S")
        say(f"row: STOPPED, stop_id {stop_id}, loop_stopped_via queue")
        if confirmation not in CONFIRMATIONS_ACCEPTED:
            raise SmokeFailed(
                f"the stop's {CONFIRMATION_HEADER} is {confirmation}, though its worker "
                "carried it out: the route did not see the loop's end"
            )
        say(f"cancel arrived on {queue_url}: the worker cancelled run {run_id}")
    say("smoke: ok")
    return {
        "conversation_id": conversation_id,
        "run_id": run_id,
        "stop_id": stop_id,
        "confirmation": confirmation,
    }


def _send_stops(url: str, key: str, say: Any) -> tuple[httpx.Response, float]:
    """Without the key and with a wrong one (both refused), then with the key: its answer
    and how long it took (blocking: in a thread, while the worker polls)."""
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
        return response, (time.monotonic() - started) * 1000


def _row(table_name: str, conversation_id: str) -> dict[str, Any]:
    item: dict[str, Any] = (
        boto3.client("dynamodb")
        .get_item(
            TableName=table_name,
            Key={"conversation_id": {"S": conversation_id}},
            ConsistentRead=True,
        )
        .get("Item", {})
    )
    return item


async def _ended_row(table_name: str, conversation_id: str, deadline: float) -> dict[str, Any]:
    """The row once the worker has recorded the loop's end (just after the loop's task ends),
    or as it is at the deadline."""
    while True:
        row = await asyncio.to_thread(_row, table_name, conversation_id)
        if "loop_stopped_via" in row or time.monotonic() >= deadline:
            return row
        await asyncio.sleep(0.1)


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
    parser.add_argument(
        "--wait", type=float, default=30, help="seconds to wait for the worker to stop the loop"
    )
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
