"""A confirmed stop (STOP_WAIT_SECONDS): the answer waits for the worker's record of the loop's
end, within a bound; the body stays OpenHands' byte for byte, the headers say what happened,
and who asked is on the row, in the cancel and in the log line.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from openhands_stop.domain.confirmation import Confirmation, wait_for_loop_end
from openhands_stop.domain.ports import RunEndView
from openhands_stop.edge.app import create_app
from openhands_stop.edge.settings import RouteSettings
from openhands_stop.wiring import build_service

from local.emulation import Stack, seed
from tests.support import KEY, drain_queue, read_record
from tests.worker.support import Agent, worker_factory

STOPPED_BODY = {
    "status": "ok",
    "message": "Conversation stopped successfully",
    "conversation_status": "RUNNING",
}


@pytest.fixture
async def route(settings: RouteSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a 2 s wait, in this event loop (so a worker can serve beside it)."""
    waiting = settings.model_copy(update={"stop_wait_seconds": 2.0})
    app = create_app(build_service(waiting))
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4242))
    async with httpx.AsyncClient(transport=transport, base_url="http://stop") as client:
        yield client


async def stop(client: httpx.AsyncClient, cid: str, **headers: str) -> httpx.Response:
    return await client.post(
        f"/api/conversations/{cid}/stop", headers={"X-Session-API-Key": KEY, **headers}
    )


def stop_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    return [line for line in lines if line.get("message") == "stop"]


@pytest.mark.anyio
async def test_a_stop_answers_once_the_worker_recorded_the_loops_end(
    stack: Stack, route: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(stack, {"live": "STARTING"})
    worker = worker_factory(stack)(
        stack.stack_queue_url, worker_queue_prefix=stack.worker_queue_prefix, wait_time_seconds=5
    )
    async with worker:
        task = await worker.start("live", Agent())
        answer = await stop(route, "live")
        loop_done_when_answered = task.done()
        row = read_record(stack, "live")

    assert answer.status_code == 200
    assert answer.json() == {**STOPPED_BODY, "conversation_id": "live"}
    assert answer.headers["X-Stop-Confirmation"] == "confirmed"
    assert int(answer.headers["X-Stop-Confirmed-Ms"]) >= 0
    assert loop_done_when_answered  # the answer came after the loop ended, not before
    assert row is not None
    assert row["loop_stopped_via"] == "queue"
    [line] = stop_lines(capsys)
    assert line["confirmation"] == "confirmed"
    assert line["StopConfirmed"] == 1
    assert 1 <= line["confirmation_reads"] <= 10


@pytest.mark.anyio
async def test_a_stop_whose_loop_is_not_confirmed_in_time_still_answers_stopped(
    stack: Stack, route: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """A live worker that does not poll: the wait runs out; 200, the stop is recorded."""
    seed(stack, {"slow": "STARTING"})
    worker = worker_factory(stack)()
    await worker.start("slow", Agent())

    answer = await stop(route, "slow")

    assert answer.status_code == 200
    assert answer.json() == {**STOPPED_BODY, "conversation_id": "slow"}
    assert answer.headers["X-Stop-Confirmation"] == "unconfirmed"
    assert "X-Stop-Confirmed-Ms" not in answer.headers
    assert int(answer.headers["X-Stop-Waited-Ms"]) >= 2000  # the whole wait, no confirmation
    [line] = stop_lines(capsys)
    assert (line["confirmation"], line["StopUnconfirmed"]) == ("unconfirmed", 1)
    assert line["confirmation_ms"] >= 2000  # it waited the whole bound
    await worker.aclose()


@pytest.mark.anyio
async def test_a_stop_of_a_run_whose_worker_is_known_dead_answers_at_once_not_running(
    stack: Stack, route: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(stack, {"orphaned": "STARTING"})
    dead = worker_factory(stack)(
        stack.stack_queue_url, worker_queue_prefix=stack.worker_queue_prefix
    )
    await dead.start("orphaned", Agent())
    stack.client("dynamodb").update_item(  # what a peer's verdict writes
        TableName=stack.table_name,
        Key={"conversation_id": {"S": f"worker#{dead.instance}"}},
        UpdateExpression="SET dead = :judge",
        ExpressionAttributeValues={":judge": {"S": "0123456789ab"}},
    )

    answer = await stop(route, "orphaned")

    assert answer.status_code == 200
    assert answer.json() == {
        "status": "ok",
        "conversation_id": "orphaned",
        "message": "Conversation was not running",
        "conversation_status": "STOPPED",
    }
    assert answer.headers["X-Stop-Confirmation"] == "worker-lost"
    assert int(answer.headers["X-Stop-Waited-Ms"]) < 2000  # answered at once, not at the bound
    [line] = stop_lines(capsys)
    assert line["StopWorkerLost"] == 1
    assert line["confirmation_reads"] == 2  # the row once, the worker's item once
    assert line["confirmation_ms"] < 2000  # not the whole bound


@pytest.mark.anyio
async def test_a_conversation_not_running_or_not_started_has_nothing_to_wait_for(
    stack: Stack, route: httpx.AsyncClient
) -> None:
    seed(stack, {"starting": "STARTING", "stopped": "STOPPED"})

    starting = await stop(route, "starting")
    stopped = await stop(route, "stopped")

    assert starting.json()["message"] == "Conversation stopped successfully"
    assert starting.headers["X-Stop-Confirmation"] == "no-run"
    assert stopped.json()["message"] == "Conversation was not running"
    assert stopped.headers["X-Stop-Confirmation"] == "no-run"


def test_with_the_wait_off_a_stop_says_it_did_not_wait(
    seeded: Stack, client: Any, aws_calls: Any
) -> None:
    answer = client.post("/api/conversations/conv-1/stop", headers={"X-Session-API-Key": KEY})
    assert answer.headers["X-Stop-Confirmation"] in {"not-waited", "no-run"}
    assert "dynamodb.GetItem" not in aws_calls.calls  # no read when the wait is off


@pytest.mark.anyio
async def test_who_asked_is_on_the_row_in_the_cancel_and_in_the_log_never_the_key(
    stack: Stack, route: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(stack, {"audited": "STARTING"})
    reason = "budget exceeded\r\nX-Injected: yes" + "!" * 300

    answer = await stop(route, "audited", **{"User-Agent": "ops-cli/1.2", "X-Stop-Reason": reason})

    assert answer.status_code == 200
    row = read_record(stack, "audited")
    assert row is not None
    assert row["stop_source_ip"] == "203.0.113.7"
    assert row["stop_user_agent"] == "ops-cli/1.2"
    assert row["stop_reason"].startswith("budget exceeded??X-Injected: yes!")
    assert len(row["stop_reason"]) == 200
    [cancel] = drain_queue(stack)
    assert (cancel["source_ip"], cancel["user_agent"]) == ("203.0.113.7", "ops-cli/1.2")
    assert cancel["reason"] == row["stop_reason"]
    output = capsys.readouterr().out
    [line] = [json.loads(x) for x in output.splitlines() if '"message":"stop"' in x]
    assert (line["source_ip"], line["reason"]) == ("203.0.113.7", row["stop_reason"])
    assert KEY not in output
    assert KEY not in json.dumps(row)
    assert KEY not in json.dumps(cancel)


@pytest.mark.anyio
async def test_a_repeat_of_the_stop_resends_the_identical_audited_cancel(
    stack: Stack, route: httpx.AsyncClient
) -> None:
    seed(stack, {"again": "STARTING"})
    await stop(route, "again", **{"X-Stop-Reason": "first"})
    [first] = drain_queue(stack)
    await stop(route, "again", **{"X-Stop-Reason": "second"})  # within the resend window
    [resent] = drain_queue(stack)
    assert resent == first
    await asyncio.sleep(0)


class _HeldReads:
    """RunEnds whose chosen read holds until released: a slow DynamoDB read."""

    def __init__(self, slow: str) -> None:
        self.slow = slow
        self.release = threading.Event()
        self.started = threading.Event()
        self.finished = threading.Event()

    def _read(self, name: str) -> None:
        if name == self.slow:
            self.started.set()
            self.release.wait(10)
            self.finished.set()

    def run_end(self, conversation_id: str) -> RunEndView | None:
        self._read("run_end")
        return RunEndView(run_id="run-1", loop_stopped_via=None)

    def worker_gone(self, worker_instance: str) -> bool:
        self._read("worker_gone")
        return False


@pytest.mark.anyio
@pytest.mark.parametrize("slow", ["run_end", "worker_gone"])
async def test_the_wait_keeps_its_bound_while_a_read_is_still_out(slow: str) -> None:
    reads = _HeldReads(slow)
    try:
        confirmation = await wait_for_loop_end(
            "c",
            "run-1",
            "worker-1",
            run_ends=reads,
            wait_seconds=0.5,
            started=time.monotonic(),
            monotonic=time.monotonic,
            sleep=asyncio.sleep,
        )
        # Answered while the slow read was still out: it never reached an answer.
        assert reads.started.is_set()
        assert not reads.finished.is_set()
        assert confirmation.outcome is Confirmation.UNCONFIRMED
    finally:
        reads.release.set()
