"""Races: many stops of one conversation at once, over real sockets; a stop against a
worker's claim of the conversation, in both orders and truly at once."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from openhands_stop.aws.claims import DynamoClaimTable
from openhands_stop.domain.models import utc_now
from openhands_stop.edge.service import StopService

from local.emulation import DEMO_SESSION_KEY, Stack, seed
from tests.reliability.profile import FULL
from tests.reliability.support import Evidence, LiveServer
from tests.support import drain_queue, read_record

STOPS = 50
INSTANCES = 5  # like five warm Lambda instances behind one API
CLAIM_ROUNDS = 40 if FULL else 8


def test_fifty_concurrent_stops_make_one_transition_and_one_cancel(
    wire_stack: Stack, live_servers: Callable[[int], list[LiveServer]], evidence: Evidence
) -> None:
    cid = "conv-race"
    seed(wire_stack, {cid: "RUNNING"})
    servers = live_servers(INSTANCES)
    start = threading.Barrier(STOPS)

    def stop(n: int) -> httpx.Response:
        with httpx.Client(base_url=servers[n % INSTANCES].url, timeout=30) as client:
            start.wait()
            return client.post(
                f"/api/conversations/{cid}/stop", headers={"X-Session-API-Key": DEMO_SESSION_KEY}
            )

    with ThreadPoolExecutor(STOPS) as pool:
        answers = list(pool.map(stop, range(STOPS)))

    assert Counter(a.status_code for a in answers) == {200: STOPS}
    messages = Counter(a.json()["message"] for a in answers)
    assert messages["Conversation stopped successfully"] == 1
    assert messages["Conversation was not running"] == STOPS - 1
    record = read_record(wire_stack, cid)
    assert record is not None
    assert record["status"] == "STOPPED"
    assert record["version"] == "1"  # ADD version 1 ran exactly once
    cancels = drain_queue(wire_stack)
    assert cancels
    assert {c["stop_id"] for c in cancels} == {record["stop_id"]}
    evidence(
        "Race",
        f"{STOPS} concurrent stops of one conversation, over HTTP, {INSTANCES} server instances",
        f"{STOPS} x 200, 1 transition (record version 1), {len(cancels)} cancel(s) delivered "
        f"after FIFO dedup, all with the one recorded stop_id",
    )


def claim(stack: Stack, cid: str, worker_id: str, queue_url: str) -> bool:
    """A worker's claim, the worker's own code: STARTING -> RUNNING, fails on STOPPED."""
    claims = DynamoClaimTable(stack.client("dynamodb"), stack.table_name)
    return claims.claim(
        cid,
        run_id=f"run-{cid}",
        worker_id=worker_id,
        worker_instance="0123456789ab",
        cancel_queue_url=queue_url,
        now=utc_now(),
    ).claimed


def _worker_queue(stack: Stack) -> str:
    name = f"{stack.worker_queue_prefix}0123456789ab.fifo"
    url: str = stack.client("sqs").create_queue(QueueName=name, Attributes={"FifoQueue": "true"})[
        "QueueUrl"
    ]
    return url


def _check_round(stack: Stack, cid: str, claimed: bool, worker_queue: str) -> str:
    """Whatever the order: STOPPED, and either the claim failed or its queue got the cancel."""
    record = read_record(stack, cid)
    assert record is not None
    assert record["status"] == "STOPPED"
    on_worker = drain_queue(stack, worker_queue)
    on_default = drain_queue(stack)
    if claimed:
        assert record["worker_id"] == "worker-1"
        assert [c["stop_id"] for c in on_worker] == [record["stop_id"]]
        assert on_default == []
        return "claim first"
    assert "worker_id" not in record
    assert on_worker == []
    assert [c["stop_id"] for c in on_default] == [record["stop_id"]]
    return "stop first"


def test_stop_then_claim_and_claim_then_stop(
    wire_stack: Stack, wire_service: StopService, evidence: Evidence
) -> None:
    worker_queue = _worker_queue(wire_stack)
    seed(wire_stack, {"a": "STARTING", "b": "STARTING"})

    wire_service.stop("a", "r-a")
    claimed_a = claim(wire_stack, "a", "worker-1", worker_queue)
    assert not claimed_a
    assert _check_round(wire_stack, "a", claimed_a, worker_queue) == "stop first"

    claimed_b = claim(wire_stack, "b", "worker-1", worker_queue)
    assert claimed_b
    result = wire_service.stop("b", "r-b")
    assert result.previous_status == "RUNNING"
    assert _check_round(wire_stack, "b", claimed_b, worker_queue) == "claim first"
    evidence(
        "Race",
        "stop, then a worker's claim / a claim, then the stop",
        "stop first: claim refused, record STOPPED, cancel on the default queue; claim first: "
        "record STOPPED, cancel on the claiming worker's queue",
    )


def test_stop_racing_a_claim_always_ends_stopped(
    wire_stack: Stack, wire_service: StopService, evidence: Evidence
) -> None:
    worker_queue = _worker_queue(wire_stack)
    outcomes: Counter[str] = Counter()
    for n in range(CLAIM_ROUNDS):
        cid = f"claim-race-{n}"
        seed(wire_stack, {cid: "STARTING"})
        gate = threading.Barrier(2)
        results: dict[str, Any] = {}

        def do_claim(
            cid: str = cid, gate: threading.Barrier = gate, results: dict[str, Any] = results
        ) -> None:
            gate.wait()
            results["claimed"] = claim(wire_stack, cid, "worker-1", worker_queue)

        def do_stop(
            cid: str = cid, gate: threading.Barrier = gate, results: dict[str, Any] = results
        ) -> None:
            gate.wait()
            results["stop"] = wire_service.stop(cid, f"r-{cid}")

        threads = [threading.Thread(target=do_claim), threading.Thread(target=do_stop)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        outcomes[_check_round(wire_stack, cid, results["claimed"], worker_queue)] += 1
    assert sum(outcomes.values()) == CLAIM_ROUNDS
    evidence(
        "Race",
        f"a stop racing a worker's claim, {CLAIM_ROUNDS} rounds at once",
        f"every round STOPPED with its cancel where the loop listens "
        f"({outcomes['claim first']} claim first, {outcomes['stop first']} stop first); "
        "no round lost a cancel",
    )
