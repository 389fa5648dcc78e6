"""A confirmed stop: answer once the worker has recorded that the stopped run's loop ended.

OpenHands answers "Conversation stopped successfully" after its ``close_session`` has closed
the session: the answer is the confirmation. With a wait configured, the route does the same
within a bound: after recording the stop and sending the cancel, it reads the row (strongly
consistent) on a short, growing cadence until the worker has written the end of *that* run
(``loop_stopped_via``), or the bound runs out. A run whose worker its peers have declared
dead is answered at once: no loop runs there to confirm (tests/test_confirmed_stop.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from openhands_stop.domain.models import RunEnd
from openhands_stop.domain.ports import RunEnds

# Seconds between reads: short first, since a running worker's loop ends soon after its
# cancel arrives (docs/performance.md has the figures), then backing off to the last step
# (at most 5 reads a second).
_CADENCE = (0.025, 0.025, 0.05, 0.1, 0.1, 0.2)


class Confirmation(StrEnum):
    """What a stop's answer can say of the loop (the ``X-Stop-Confirmation`` header)."""

    CONFIRMED = "confirmed"  # the worker recorded the end of the stopped run
    UNCONFIRMED = "unconfirmed"  # the wait ran out: recorded and sent, not yet carried out
    WORKER_LOST = "worker-lost"  # its worker is known dead: no loop runs to confirm
    NOT_WAITED = "not-waited"  # the wait is off (STOP_WAIT_SECONDS=0)
    NO_RUN = "no-run"  # nothing was running (not running, or stopped before it started)


@dataclass(frozen=True)
class StopConfirmation:
    outcome: Confirmation
    waited_seconds: float = 0.0  # from the stop's request to the outcome
    reads: int = 0
    loop_stopped_via: RunEnd | None = None


async def wait_for_loop_end(
    conversation_id: str,
    run_id: str,
    worker_instance: str | None,
    *,
    run_ends: RunEnds,
    wait_seconds: float,
    started: float,
    monotonic: Callable[[], float],
    sleep: Callable[[float], Awaitable[object]],
) -> StopConfirmation:
    """Read the row until the worker has recorded the end of ``run_id``, for at most
    ``wait_seconds`` after ``started`` (both on ``monotonic``). Never a busy loop: every read
    follows a sleep of the cadence."""
    deadline = started + wait_seconds
    reads = 0
    worker_checked = worker_instance is None
    step = 0
    while (remaining := deadline - monotonic()) > 0:
        await sleep(min(_CADENCE[min(step, len(_CADENCE) - 1)], remaining))
        step += 1
        if (remaining := deadline - monotonic()) <= 0:
            break
        # In a thread: on a server that answers many stops in one event loop (uvicorn), one
        # stop's read must not hold up the others' answers. A read still out at the deadline
        # (this one or the worker's) is left: the bound holds even when a read is slow
        # (tests/test_confirmed_stop.py).
        reads += 1
        try:
            view = await asyncio.wait_for(
                asyncio.to_thread(run_ends.run_end, conversation_id), remaining
            )
        except TimeoutError:
            break
        if view is None or view.run_id != run_id:
            break  # the row moved on (reset, or started again): this run's end is not on it
        if view.loop_stopped_via is not None:
            outcome = (
                Confirmation.WORKER_LOST
                if view.loop_stopped_via is RunEnd.WORKER_LOST
                else Confirmation.CONFIRMED
            )
            return StopConfirmation(outcome, monotonic() - started, reads, view.loop_stopped_via)
        if not worker_checked:
            worker_checked = True
            reads += 1
            assert worker_instance is not None
            try:
                gone = await asyncio.wait_for(
                    asyncio.to_thread(run_ends.worker_gone, worker_instance),
                    max(deadline - monotonic(), 0),
                )
            except TimeoutError:
                break
            if gone:
                return StopConfirmation(Confirmation.WORKER_LOST, monotonic() - started, reads)
    return StopConfirmation(Confirmation.UNCONFIRMED, monotonic() - started, reads)
