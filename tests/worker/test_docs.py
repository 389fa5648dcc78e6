"""The worker guide's embedding example, run as written against moto."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from openhands_stop.edge.service import StopService

from local.emulation import ROOT, Stack, seed
from tests.support import read_record
from tests.worker.conftest import queue_depth

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


def test_the_documented_embedding_runs_and_its_loops_stop(
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

    async def scenario() -> None:
        ids = ["conversation-1", "conversation-2", "elsewhere"]
        host = asyncio.create_task(namespace["main"](ids))
        for conversation_id in ("conversation-1", "conversation-2"):
            while await asyncio.to_thread(_status, stack, conversation_id) != "RUNNING":
                await asyncio.sleep(0.05)
            await asyncio.to_thread(service.stop, conversation_id, f"req-{conversation_id}")
        await asyncio.wait_for(host, timeout=15)

    asyncio.run(scenario())

    out = capsys.readouterr().out
    assert "conversation-1: sandbox closed" in out
    assert "conversation-2: sandbox closed" in out
    assert "elsewhere: not started (RUNNING)" in out  # registered: a new one, a stopped one
    assert _status(stack, "conversation-1") == "STOPPED"
    assert _status(stack, "elsewhere") == "RUNNING"
    assert queue_depth(stack, stack.queue_url) == (0, 0)
    prefix = stack.worker_queue_prefix
    assert stack.client("sqs").list_queues(QueueNamePrefix=prefix).get("QueueUrls", []) == []
