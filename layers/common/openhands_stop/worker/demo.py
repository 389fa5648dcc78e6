"""A stand-in agent loop: a visible tick a second, and a visible cleanup when cancelled."""

from __future__ import annotations

import asyncio

from openhands_stop.worker.runs import AgentLoop


def demo_agent_loop(tick_seconds: float = 1.0) -> AgentLoop:
    """An agent loop that prints ``tick N`` until cancelled, then says it cleaned up."""

    async def run(conversation_id: str) -> None:
        tick = 0
        try:
            while True:
                tick += 1
                print(f"[{conversation_id}] agent loop tick {tick}", flush=True)
                await asyncio.sleep(tick_seconds)
        except asyncio.CancelledError:
            # Where a real agent closes its sandbox and flushes its event stream.
            print(f"[{conversation_id}] agent loop stopped after {tick} ticks", flush=True)
            raise

    return run
