"""`make reset-conversation`: a row no worker can read goes back to STOPPED, nothing else moves."""

from __future__ import annotations

import pytest
from openhands_stop.edge.service import StopService
from openhands_stop.worker import ClaimRejected

from local.emulation import Stack, seed
from scripts.reset_conversation import NotReset, main, reset
from tests.support import read_record
from tests.worker.support import Agent, worker_factory


@pytest.mark.anyio
async def test_an_unknown_status_is_reset_and_the_conversation_starts_again(
    stack: Stack, service: StopService
) -> None:
    seed(stack, {"archived": "ARCHIVED", "neighbour": "RUNNING"})
    worker = worker_factory(stack)()
    with pytest.raises(ClaimRejected):
        await worker.register("archived")

    was = reset(stack.client("dynamodb"), stack.table_name, "archived", force=False)

    assert was == "ARCHIVED"
    assert (read_record(stack, "archived") or {})["status"] == "STOPPED"
    assert read_record(stack, "neighbour") == {"conversation_id": "neighbour", "status": "RUNNING"}
    await worker.register("archived")
    task = await worker.start("archived", Agent())
    assert service.stop("archived", "r").response().message == "Conversation stopped successfully"
    assert await worker.poll_once() != []
    assert task.cancelled()


@pytest.mark.parametrize(("status", "force"), [("RUNNING", False), ("STARTING", False)])
def test_a_live_row_is_refused_without_force(stack: Stack, status: str, force: bool) -> None:
    seed(stack, {"live": status})
    with pytest.raises(NotReset, match=f"it is {status}"):
        reset(stack.client("dynamodb"), stack.table_name, "live", force=force)
    assert (read_record(stack, "live") or {})["status"] == status


def test_force_resets_a_live_row_and_a_missing_or_bad_id_writes_nothing(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(stack, {"live": "RUNNING"})
    assert main(["--table", stack.table_name, "--conversation-id", "live", "--force"]) == 0
    assert main(["--table", stack.table_name, "--conversation-id", "absent"]) == 1
    assert main(["--table", stack.table_name, "--conversation-id", "../x"]) == 1
    out = capsys.readouterr()
    assert "reset live: RUNNING -> STOPPED" in out.out
    assert "no such conversation" in out.err
    assert read_record(stack, "absent") is None
    assert (read_record(stack, "live") or {})["status"] == "STOPPED"
