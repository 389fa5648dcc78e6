"""The worker's one shutdown signal, read by its tasks on the event loop and by its polls in
threads alike."""

from __future__ import annotations

import asyncio
import threading


class Shutdown:
    """Set once, by ``shutdown()`` or a signal handler; never cleared."""

    def __init__(self) -> None:
        self._for_tasks = asyncio.Event()
        self._for_threads = threading.Event()

    def request(self) -> None:
        """Safe from a signal handler, and more than once."""
        self._for_threads.set()
        self._for_tasks.set()

    @property
    def requested(self) -> bool:
        """Readable from any thread (a poll that returns after shutdown hands its catch back)."""
        return self._for_threads.is_set()

    async def wait(self) -> None:
        await self._for_tasks.wait()
