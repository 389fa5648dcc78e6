"""The end of a fleet run: runs held idle on every live worker (the backstop's steady cost),
then stopped just as the workers are told to shut down; the clean shutdown; and what it left
(queues under the prefix, rows not ``STOPPED``, messages on the stack queue)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from local.fleet import counter

if TYPE_CHECKING:
    from local.fleet.result import TrackedRun
    from local.fleet.scenario import Fleet

SHUTDOWN_STOPS_HEAD_START = (0.0, 0.1)
"""Seconds the stops sent at shutdown get before the workers are told to quit."""


async def stops_at_shutdown(fleet: Fleet) -> None:
    """A few runs on each live worker, stopped just as the workers are told to shut down
    (``shut_down`` follows at once): whichever ends each loop first, the cancel or the
    shutdown, its row must say how it ended."""
    config, result = fleet.config, fleet.result
    live = [host.index for host in fleet.hosts if host.alive]
    starts = [
        fleet.start(f"fleet-shutdown-{host}-{n}", host, cycle=-1)
        for host in live
        for n in range(config.shutdown_stops)
    ]
    runs = [run for run in await asyncio.gather(*starts) if run is not None]
    for run in runs:
        run.at_shutdown = True
    result.shutdown_stops = len(runs)
    # Held idle first: what the backstop (and liveness) cost while runs only run.
    before = await asyncio.gather(*(_stats(fleet, host) for host in live))
    idle_started = time.monotonic()
    await asyncio.sleep(config.idle_seconds)
    after = await asyncio.gather(*(_stats(fleet, host) for host in live))
    counted = result.costs
    for earlier, later in zip(before, after, strict=True):
        counter.add(counted.idle, counter.subtract(later, earlier))
    counted.idle_run_seconds = len(runs) * (time.monotonic() - idle_started)
    counted.idle_runs_per_worker = len(runs) / len(live) if live else 0.0
    counted.idle_backstop_seconds = config.backstop_seconds
    fleet.late_stops = asyncio.create_task(_send_stops(fleet, runs))
    # The shutdown begins while the stops are on their way, some answered, some not.
    await asyncio.sleep(fleet.random.uniform(*SHUTDOWN_STOPS_HEAD_START))


async def _stats(fleet: Fleet, host: int) -> dict[str, Any]:
    token = secrets.token_hex(6)
    fleet.hosts[host].send(f"stats {token}")
    reply = await fleet.lines.wait(("reply", token), host, timeout=30)
    aws: dict[str, Any] = reply.get("aws", {})
    return aws


async def _send_stops(fleet: Fleet, runs: list[TrackedRun]) -> None:
    async with fleet.http() as http:

        async def stop(run: TrackedRun) -> None:
            run.stop_sent_at = time.time()
            await fleet.stop(http, run.conversation_id)

        await asyncio.gather(*(stop(run) for run in runs))


async def shut_down(fleet: Fleet) -> None:
    """Every live worker told to quit, then what the run left behind."""
    result = fleet.result
    codes = await asyncio.gather(
        *(asyncio.to_thread(host.close, 30) for host in fleet.hosts if not host.killed)
    )
    result.clean_shutdowns = len(codes)
    if fleet.late_stops is not None:
        await fleet.late_stops
    result.clean_exits = sum(code == 0 for code in codes)
    # The lines read last (the shutdown's) are still on their way to the loop.
    await asyncio.sleep(0.2)
    listed = await asyncio.to_thread(fleet.sqs.list_queues, QueueNamePrefix=fleet.prefix)
    result.queues_left = list(listed.get("QueueUrls", []))
    victim = fleet.faults.victim
    if victim is not None and victim.queue_url in result.queues_left:
        result.killed_queue_removed = False
    result.rows_not_stopped = await asyncio.to_thread(_rows_not_stopped, fleet)
    await asyncio.to_thread(_check_shutdown_rows, fleet)
    attributes = await asyncio.to_thread(
        fleet.sqs.get_queue_attributes,
        QueueUrl=fleet.stack.stack_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    result.stack_queue_left = sum(int(v) for v in attributes["Attributes"].values())


def _check_shutdown_rows(fleet: Fleet) -> None:
    marked: Counter[str] = Counter()
    for run in fleet.runs.values():
        if not run.at_shutdown:
            continue
        item = fleet.row(run.conversation_id)
        if item.get("run_id", {}).get("S") == run.run_id and "loop_stopped_at" in item:
            marked[item.get("loop_stopped_via", {}).get("S", "?")] += 1
        else:
            fleet.result.shutdown_rows_unmarked += 1
    fleet.result.shutdown_rows_via = dict(marked)


def _rows_not_stopped(fleet: Fleet) -> int:
    counted = fleet.result.costs
    count = 0
    paginator = fleet.dynamodb.get_paginator("scan")
    for page in paginator.paginate(TableName=fleet.stack.table_name, ConsistentRead=True):
        for item in page["Items"]:
            if item["conversation_id"]["S"].startswith("worker#"):
                continue  # a liveness item (the killed worker's may outlive the run)
            count += item.get("status", {}).get("S") != "STOPPED"
            counted.largest_row_bytes = max(counted.largest_row_bytes, counter.item_bytes(item))
    return count
