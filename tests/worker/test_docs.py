"""The worker guide's embedding example, run as written against moto."""

from __future__ import annotations

import ast
import asyncio
import json
import re
from typing import Any

import pytest
from openhands_stop.edge.service import StopService

from local.emulation import ROOT, Stack, seed
from tests.support import read_record
from tests.worker.support import queue_depth

DOC = ROOT / "docs" / "worker.md"


def embedding_example() -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Embedding the worker") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "docs/worker.md lost its worker embedding example"
    return match.group(1)


def _status(stack: Stack, conversation_id: str) -> str | None:
    record = read_record(stack, conversation_id)
    return None if record is None else str(record["status"])


@pytest.mark.anyio
async def test_the_documented_embedding_runs_and_its_loops_stop(
    stack: Stack,
    service: StopService,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in stack.function_environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WORKER_ID", "docs-worker")
    monkeypatch.setenv("WAIT_TIME_SECONDS", "1")
    seed(stack, {"conversation-2": "STOPPED", "elsewhere": "RUNNING"})
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(embedding_example(), str(DOC), "exec"), namespace)  # noqa: S102 - our own doc

    ids = ["conversation-1", "conversation-2", "elsewhere"]
    host = asyncio.create_task(namespace["main"](ids))
    for conversation_id in ("conversation-1", "conversation-2"):
        while await asyncio.to_thread(_status, stack, conversation_id) != "RUNNING":
            if host.done():  # the example failed before it started the loop
                host.result()
                raise AssertionError(f"the example ended without starting {conversation_id}")
            await asyncio.sleep(0.05)
        await asyncio.to_thread(service.stop, conversation_id, f"req-{conversation_id}")
    await asyncio.wait_for(host, timeout=15)

    captured = capsys.readouterr()
    out = captured.out
    assert "conversation-1: sandbox closed" in out
    assert "conversation-2: sandbox closed" in out
    assert "elsewhere: not started (RUNNING)" in out  # registered: a new one, a stopped one
    logged = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    stopped = [line for line in logged if line["event"] == "conversation_stopped"]
    assert {line["conversation_id"] for line in stopped} == {"conversation-1", "conversation-2"}
    assert _status(stack, "conversation-1") == "STOPPED"
    assert _status(stack, "elsewhere") == "RUNNING"
    assert queue_depth(stack, stack.stack_queue_url) == (0, 0)
    prefix = stack.worker_queue_prefix
    assert stack.client("sqs").list_queues(QueueNamePrefix=prefix).get("QueueUrls", []) == []


def events_the_worker_logs() -> set[str]:
    """Every event name the worker's code passes to ``log`` (or to ``every`` and ``_join``,
    which log it)."""
    events: set[str] = set()
    for path in (ROOT / "layers" / "common" / "openhands_stop" / "worker").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            position = {"log": 1, "every": 3, "_join": 0}.get(str(name))
            if position is not None and len(node.args) > position:
                argument = node.args[position]
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    events.add(argument.value)
    return events


def test_the_guide_names_every_event_the_worker_logs_and_no_other() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("**Log.**") : text.index("## Settings")]
    named = set(re.findall(r"`([a-z]+(?:_[a-z]+)+)`", section)) - {"stop_to_stopped_ms"}
    named |= set(re.findall(r'"event": "([a-z_]+)"', section))  # the example line's
    events = events_the_worker_logs()
    assert {"conversation_stopped", "worker_joined", "liveness_failed"} <= events  # scan works
    assert sorted(events - named) == [], "logged but not in docs/worker.md"
    assert sorted(named - events) == [], "in docs/worker.md but never logged"
