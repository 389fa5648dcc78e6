"""One way to run a step every interval until the worker closes, with no failure ending it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.worker.logs import log
from openhands_stop.worker.shutdown import Shutdown


async def every(
    seconds: float | Callable[[], float],
    shutdown: Shutdown,
    step: Callable[[], Awaitable[object]],
    failed: str,
) -> None:
    """Await ``step()`` every ``seconds`` (or as long as it answers, asked before each wait)
    until shutdown. A failure is logged as ``failed`` (an AWS failure's code, any other
    error's type, never more) and the next step runs: the backstop and the liveness beat
    cannot die (tests/worker/test_backstop.py)."""
    while not shutdown.requested:
        with contextlib.suppress(TimeoutError):
            wait = seconds() if callable(seconds) else seconds
            await asyncio.wait_for(shutdown.wait(), timeout=wait)
            return
        try:
            await step()
        except DependencyFailure as failure:
            log(logging.WARNING, failed, error=str(failure))
        except Exception as error:
            log(logging.ERROR, failed, error=type(error).__name__)
