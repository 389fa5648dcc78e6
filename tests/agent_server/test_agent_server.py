"""A stop through this project's route interrupts a conversation a real OpenHands 1.x
agent-server runs, through the sidecar (``openhands_stop.integrations.agent_server``).

The agent-server is the real one (``agent-server`` from ``openhands-agent-server`` 1.58.x, its
agent loop, its terminal tool); only the LLM is a fake (``fake_llm.py``) that answers with
tool calls. Orderings are asserted, never times: the figures are printed, for the docs.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from local.emulation import Stack, create_stack
from tests.agent_server.fake_llm import FakeLlm
from tests.agent_server.support import (
    MEASUREMENTS,
    AgentServer,
    Sidecar,
    alive,
    our_id,
    stop,
    wait_until,
)
from tests.support import KEY, read_record
from tests.worker.processes import WorkerProcess


def record(stack: Stack, conversation_id: str) -> dict[str, Any]:
    found = read_record(stack, conversation_id)
    assert found is not None, conversation_id
    return found


def adopted(stack: Stack, sidecar: Sidecar, conversation_id: str) -> dict[str, Any]:
    """The row once the sidecar has claimed the conversation for a run."""
    sidecar.wait_for("agent_server_adopted", conversation_id=conversation_id)
    row = record(stack, conversation_id)
    assert row["status"] == "RUNNING", row
    return row


def ended(stack: Stack, conversation_id: str, timeout: float = 30) -> dict[str, Any]:
    """The row once the end of its run is recorded."""
    wait_until(lambda: "loop_stopped_via" in record(stack, conversation_id), timeout)
    return record(stack, conversation_id)


def sleeping(marker: str) -> list[int]:
    """The pids of the ``sleep <marker>`` processes alive now."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"sleep", marker.encode()] and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_a_stop_interrupts_a_running_conversation(
    agent_stack: Stack, route: str, agent_server: AgentServer, sidecar: Sidecar, fake_llm: FakeLlm
) -> None:
    tag = f"think{uuid.uuid4().hex[:8]}"
    agent_id = agent_server.create(f"tag={tag} think=100000 delay=0.2")
    conversation_id = our_id(agent_id)
    claimed = adopted(agent_stack, sidecar, conversation_id)
    assert claimed["worker_id"] == "agent-server-sidecar"
    wait_until(lambda: fake_llm.count(tag) >= 2)  # the agent loop is at work

    requested = time.monotonic()
    body = stop(route, conversation_id, KEY)
    answered = time.monotonic()
    assert body["message"] == "Conversation stopped successfully"
    assert body["conversation_status"] == "RUNNING"

    row = ended(agent_stack, conversation_id)
    recorded = time.monotonic()
    assert row["status"] == "STOPPED"
    assert row["loop_stopped_via"] == "queue"
    # The order: the sidecar interrupted, the agent-server confirmed it no longer runs,
    # then the worker recorded the stop, with the cleanup completed.
    interrupted = sidecar.wait_for("agent_server_interrupted", conversation_id=conversation_id)
    assert interrupted["status"] == "paused"
    assert interrupted["escalated"] is False
    stopped = sidecar.wait_for("conversation_stopped", conversation_id=conversation_id)
    assert stopped["cleanup_completed"] is True
    assert stopped["via"] == "queue"
    assert agent_server.status(agent_id) == "paused"
    # A paused agent asks its LLM nothing more: the count is the same after a full sync.
    asked = fake_llm.count(tag)
    syncs = len(sidecar.seen("agent_server_adopted"))
    other = agent_server.create(f"tag=other{tag} think=3 delay=0.2")  # finishes by itself
    adopted(agent_stack, sidecar, our_id(other))
    sidecar.wait_for("agent_server_released", conversation_id=our_id(other))
    assert len(sidecar.seen("agent_server_adopted")) >= syncs
    assert fake_llm.count(tag) == asked
    MEASUREMENTS.append(
        f"LLM step in flight: stop request -> agent-server paused, confirmed "
        f"{interrupted['confirmed_ms']:.0f} ms after the interrupt; worker's "
        f"stop_to_stopped_ms {stopped['stop_to_stopped_ms']:.0f} ms; route answered in "
        f"{(answered - requested) * 1000:.0f} ms; row recorded seen after "
        f"{(recorded - requested) * 1000:.0f} ms"
    )


def test_a_stop_interrupts_a_terminal_command_in_flight(
    agent_stack: Stack, route: str, agent_server: AgentServer, sidecar: Sidecar, files: Path
) -> None:
    tag = f"sleep{uuid.uuid4().hex[:8]}"
    seconds = f"3.{uuid.uuid4().int % 1000:03d}"  # a sleep no other test runs
    agent_id = agent_server.create(f"tag={tag} sleep={seconds}")
    conversation_id = our_id(agent_id)
    adopted(agent_stack, sidecar, conversation_id)
    wait_until((files / f"{tag}.started").exists)  # the command runs
    running = sleeping(seconds)

    body = stop(route, conversation_id, KEY)
    assert body["message"] == "Conversation stopped successfully"
    row = ended(agent_stack, conversation_id)
    assert row["loop_stopped_via"] == "queue"
    stopped = sidecar.wait_for("conversation_stopped", conversation_id=conversation_id)
    assert stopped["cleanup_completed"] is True
    assert agent_server.status(agent_id) == "paused"
    # The tool call was cut short: once its sleep is over, nothing after it has run.
    assert running, "the command's sleep was not found running"
    wait_until(lambda: not sleeping(seconds), timeout=60)
    assert not (files / f"{tag}.after").exists()
    MEASUREMENTS.append(
        f"terminal command in flight: worker's stop_to_stopped_ms "
        f"{stopped['stop_to_stopped_ms']:.0f} ms"
    )


def test_a_stop_of_a_conversation_that_finished_by_itself_answers_not_running(
    agent_stack: Stack, route: str, agent_server: AgentServer, sidecar: Sidecar
) -> None:
    tag = f"finish{uuid.uuid4().hex[:8]}"
    agent_id = agent_server.create(f"tag={tag} think=3 delay=0.1")
    conversation_id = our_id(agent_id)
    adopted(agent_stack, sidecar, conversation_id)
    wait_until(lambda: agent_server.status(agent_id) == "finished")

    row = ended(agent_stack, conversation_id)
    assert row["status"] == "STOPPED"
    assert row["loop_stopped_via"] == "finished"
    body = stop(route, conversation_id, KEY)
    assert body["message"] == "Conversation was not running"
    assert body["conversation_status"] == "STOPPED"


def test_a_tagged_conversation_is_stopped_under_its_tag(
    agent_stack: Stack, route: str, agent_server: AgentServer, sidecar: Sidecar
) -> None:
    conversation_id = f"tagged-{uuid.uuid4().hex[:8]}"
    agent_id = agent_server.create(
        f"tag=t{uuid.uuid4().hex[:8]} think=100000 delay=0.2", tags={"stopid": conversation_id}
    )
    adopted(agent_stack, sidecar, conversation_id)
    assert stop(route, conversation_id, KEY)["message"] == "Conversation stopped successfully"
    assert ended(agent_stack, conversation_id)["loop_stopped_via"] == "queue"
    assert agent_server.status(agent_id) == "paused"


def test_a_stopped_conversation_runs_again_under_a_new_run(
    agent_stack: Stack, route: str, agent_server: AgentServer, sidecar: Sidecar, fake_llm: FakeLlm
) -> None:
    tag = f"again{uuid.uuid4().hex[:8]}"
    agent_id = agent_server.create(f"tag={tag} think=100000 delay=0.2")
    conversation_id = our_id(agent_id)
    first = adopted(agent_stack, sidecar, conversation_id)["run_id"]
    stop(route, conversation_id, KEY)
    ended(agent_stack, conversation_id)
    assert agent_server.status(agent_id) == "paused"

    agent_server.run(agent_id)  # the agent-server's own resume
    wait_until(
        lambda: (
            record(agent_stack, conversation_id).get("run_id") not in (None, first)
            and record(agent_stack, conversation_id)["status"] == "RUNNING"
        )
    )
    asked = fake_llm.count(tag)
    wait_until(lambda: fake_llm.count(tag) > asked)  # it really runs again
    assert "loop_stopped_via" not in record(agent_stack, conversation_id)

    body = stop(route, conversation_id, KEY)
    assert body["message"] == "Conversation stopped successfully"
    row = ended(agent_stack, conversation_id)
    assert row["loop_stopped_via"] == "queue"
    assert agent_server.status(agent_id) == "paused"


def test_a_conversation_deleted_on_the_agent_server_is_released(
    agent_stack: Stack, route: str, agent_server: AgentServer, sidecar: Sidecar
) -> None:
    agent_id = agent_server.create(f"tag=d{uuid.uuid4().hex[:8]} think=100000 delay=0.2")
    conversation_id = our_id(agent_id)
    adopted(agent_stack, sidecar, conversation_id)
    deleted = agent_server.request("DELETE", f"/api/conversations/{agent_id}")
    assert deleted.status_code == 200, deleted.text
    row = ended(agent_stack, conversation_id)
    assert row["status"] == "STOPPED"
    assert row["loop_stopped_via"] == "host"
    assert stop(route, conversation_id, KEY)["message"] == "Conversation was not running"


@pytest.fixture
def lone_stack(moto_endpoint: str) -> Stack:
    return create_stack(moto_endpoint, suffix=f"-lost-{uuid.uuid4().hex[:8]}")


def test_a_killed_agent_server_s_conversations_are_released(
    lone_stack: Stack, fake_llm: FakeLlm, tmp_path: Path
) -> None:
    server = AgentServer(tmp_path / "server", fake_llm.base_url).start()
    sidecar = Sidecar(lone_stack, server, "sidecar-of-a-killed-server")
    try:
        agent_ids = [
            server.create(f"tag=k{i}{uuid.uuid4().hex[:6]} think=100000 delay=0.2")
            for i in range(2)
        ]
        for agent_id in agent_ids:
            adopted(lone_stack, sidecar, our_id(agent_id))
        server.kill()  # kill -9: its agent loops die with it
        for agent_id in agent_ids:
            row = ended(lone_stack, our_id(agent_id))
            assert row["status"] == "STOPPED"
            assert row["loop_stopped_via"] == "worker_lost"
        assert sidecar.seen("agent_server_unreachable")
        # Restarted on the same folders, the agent-server shows them ended (error), and
        # the sidecar, once it has read them, adopts nothing.
        restarted = AgentServer(server.root, fake_llm.base_url, port=server.port).start()
        try:
            statuses = {restarted.status(agent_id) for agent_id in agent_ids}
            assert not statuses & {"running", "waiting_for_confirmation"}, statuses
            sidecar.wait_for("agent_server_reachable")
            for agent_id in agent_ids:
                assert record(lone_stack, our_id(agent_id))["status"] == "STOPPED"
            assert len(sidecar.seen("agent_server_adopted")) == len(agent_ids)
        finally:
            restarted.kill()
    finally:
        assert sidecar.terminate() == 0
        server.kill()


def test_a_killed_sidecar_s_conversations_are_released_by_a_peer(
    lone_stack: Stack, fake_llm: FakeLlm, tmp_path: Path
) -> None:
    server = AgentServer(tmp_path / "server", fake_llm.base_url).start()
    peer = WorkerProcess(
        lone_stack,
        {
            "WORKER_ID": "peer",
            "WAIT_TIME_SECONDS": "1",
            "QUEUE_HEARTBEAT_SECONDS": "0.5",
            "ORPHAN_QUEUE_SECONDS": "2",
        },
        [],
    )
    sidecar = Sidecar(lone_stack, server, "sidecar-that-dies")
    try:
        peer.next_event("worker_started")
        agent_id = server.create(f"tag=s{uuid.uuid4().hex[:8]} think=100000 delay=0.2")
        conversation_id = our_id(agent_id)
        adopted(lone_stack, sidecar, conversation_id)
        sidecar.kill()  # SIGKILL: no shutdown, its liveness counter stops
        row = ended(lone_stack, conversation_id, timeout=60)
        assert row["status"] == "STOPPED"
        assert row["loop_stopped_via"] == "worker_lost"
    finally:
        peer.terminate()
        sidecar.kill()
        server.kill()
