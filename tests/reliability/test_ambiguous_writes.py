"""A conditional write applied while its answer is lost: every writer knows its own success.

The fault lets the request through to the server (applied), then times its answer out, so
botocore's own retry sends the same write again, which its condition now refuses. Each
write recognises its earlier success from the row it gets back on refusal, with no extra
read: a stop still answers the status it stopped, a run's end counts as recorded, and a
claim whose every attempt was lost is released, conditional on its run, before the worker
gives up on it (so the row never says RUNNING for a loop that never ran).
"""

from __future__ import annotations

import pytest
from openhands_stop.aws.claims import DynamoClaimTable
from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.domain.models import RunEnd, utc_now
from openhands_stop.edge.service import StopService
from openhands_stop.worker import Worker

from local.emulation import Stack, seed
from tests.reliability.faults import APPLIED_THEN_TIMEOUT, FaultInjector
from tests.reliability.support import Evidence
from tests.support import drain_queue, read_record
from tests.worker.support import Agent, WorkerFactory


def test_a_stop_applied_while_its_answer_was_lost_still_answers_stopped(
    wire_stack: Stack, wire_service: StopService, faults: FaultInjector, evidence: Evidence
) -> None:
    seed(wire_stack, {"c": "RUNNING"})
    faults.fail("UpdateItem", APPLIED_THEN_TIMEOUT, times=1)

    answer = wire_service.stop("c", "r").response()

    assert faults.attempts["UpdateItem"] == 2  # applied, then refused by its own condition
    assert answer.message == "Conversation stopped successfully"
    assert answer.conversation_status == "RUNNING"
    record = read_record(wire_stack, "c")
    assert record is not None
    assert (record["status"], record["stopped_from"]) == ("STOPPED", "RUNNING")
    [cancel] = drain_queue(wire_stack)
    assert cancel["stop_id"] == record["stop_id"]
    evidence(
        "Fault",
        "the stop's write applied, its answer timed out (the SDK retries it)",
        f"{faults.attempts['UpdateItem']} attempts, the retry refused by its own condition and "
        f"recognised by its stop_id: 200 '{answer.message}' ({answer.conversation_status}), "
        "one cancel",
    )


def test_another_stops_refusal_is_still_not_running(
    wire_stack: Stack, wire_service: StopService, faults: FaultInjector
) -> None:
    """Recognition is by stop id: a stop that found the row stopped by another answers so."""
    seed(wire_stack, {"c": "RUNNING"})
    wire_service.stop("c", "first")
    drain_queue(wire_stack)

    answer = wire_service.stop("c", "second").response()

    assert answer.message == "Conversation was not running"


def _faulty_table(stack: Stack, injector: FaultInjector) -> DynamoClaimTable:
    client = stack.client("dynamodb")
    injector.watch(client, "UpdateItem")
    return DynamoClaimTable(client, stack.table_name)


@pytest.mark.anyio
async def test_a_claim_lost_on_every_attempt_is_released_before_the_worker_gives_up(
    wire_stack: Stack, make_wire_worker: WorkerFactory, no_backoff: None, evidence: Evidence
) -> None:
    seed(wire_stack, {"ghost": "STARTING"})
    injector = FaultInjector()
    worker: Worker = make_wire_worker(table=_faulty_table(wire_stack, injector))
    injector.fail("UpdateItem", APPLIED_THEN_TIMEOUT)

    with pytest.raises(DependencyFailure):
        await worker.start("ghost", Agent())
    injector.clear()
    # The release in the claim was applied too, its answer lost: the next pass confirms it.
    await worker.backstop_once()

    record = read_record(wire_stack, "ghost")
    assert record is not None
    assert (record["status"], record["loop_stopped_via"]) == ("STOPPED", "before_start")
    await worker.register("ghost")  # the host can start it again, here or elsewhere
    task = await worker.start("ghost", Agent())
    assert not task.done()
    await worker.aclose()
    evidence(
        "Fault",
        "a claim applied on every attempt, every answer timed out",
        f"{injector.attempts['UpdateItem']} UpdateItem attempts; the claim failed, its run "
        f"was released on the row ({record['status']}, {record['loop_stopped_via']}); "
        "register and start again worked",
    )


def test_a_run_end_applied_while_its_answer_was_lost_counts_as_recorded(
    wire_stack: Stack, no_backoff: None, evidence: Evidence
) -> None:
    seed(wire_stack, {"c": "STARTING"})
    injector = FaultInjector()
    table = _faulty_table(wire_stack, injector)
    claimed = table.claim(
        "c",
        run_id="r1",
        worker_id="w",
        worker_instance="0" * 12,
        cancel_queue_url="q",
        now=utc_now(),
    )
    assert claimed.claimed
    injector.fail("UpdateItem", APPLIED_THEN_TIMEOUT, times=1)

    recorded = table.record_run_ended("c", "r1", via=RunEnd.FINISHED, now=utc_now())

    assert recorded
    assert injector.attempts["UpdateItem"] == 3  # the claim, the end, its refused retry
    assert (read_record(wire_stack, "c") or {})["loop_stopped_via"] == "finished"
    evidence(
        "Fault",
        "a run's end applied, its answer timed out",
        "the retry refused (the end already recorded) and recognised by its run: recorded",
    )


def test_a_register_applied_while_its_answer_was_lost_succeeds(
    wire_stack: Stack, no_backoff: None
) -> None:
    seed(wire_stack, {"c": "STOPPED"})
    injector = FaultInjector()
    table = _faulty_table(wire_stack, injector)
    injector.fail("UpdateItem", APPLIED_THEN_TIMEOUT, times=1)

    assert table.register("c", now=utc_now()).claimed
    assert (read_record(wire_stack, "c") or {})["status"] == "STARTING"
