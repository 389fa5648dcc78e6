"""``make bench``'s progress, on stderr in ``make fleet``'s style: ``bench:  <seconds> s  <where
it is>``. A phase's count is printed when it begins and ends, and at most every few seconds
between; stdout keeps the tables alone."""

from __future__ import annotations

import sys
import time
from typing import IO


class Progress:
    """Where a run is: ``context`` (``run 1 of 3: ``, say) prefixes every line."""

    def __init__(self, out: IO[str] | None = None, every: float = 5.0) -> None:
        self._out = out
        self.every = every
        self.context = ""
        self.started = time.monotonic()
        self._phase: str | None = None
        self._last = -float("inf")

    def say(self, text: str) -> None:
        out = self._out or sys.stderr
        out.write(f"bench: {time.monotonic() - self.started:5.0f} s  {self.context}{text}\n")
        out.flush()
        self._last = time.monotonic()

    def count(self, phase: str, done: int, total: int) -> None:
        """``phase done/total``: as the phase begins and ends, else every ``every`` seconds."""
        begins, self._phase = phase != self._phase, phase
        if begins or done >= total or time.monotonic() - self._last >= self.every:
            self.say(f"{phase} {done:,}/{total:,}")
