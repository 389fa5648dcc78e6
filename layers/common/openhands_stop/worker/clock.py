"""The worker's two clocks: the wall clock it writes on rows, the monotonic one it decides by.

No decision of the worker reads the wall clock: waits and ages are spans of its own
monotonic clock, liveness is a counter. The wall clock only stamps rows and log lines for
people. Tests and ``make fleet`` give a worker a clock set minutes off (``Clock.skewed``) to
show that nothing depends on it (tests/worker/test_liveness.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from openhands_stop.domain.models import utc_now


@dataclass(frozen=True)
class Clock:
    wall: Callable[[], datetime] = utc_now
    monotonic: Callable[[], float] = time.monotonic

    @classmethod
    def skewed(cls, seconds: float) -> Clock:
        """A wall clock ``seconds`` ahead (behind when negative) of this host's."""
        offset = timedelta(seconds=seconds)
        return cls(wall=lambda: utc_now() + offset)
