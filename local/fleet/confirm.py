"""``make fleet``'s confirmed stops (issue 19): the route runs with ``STOP_WAIT_SECONDS`` on.

Every stop's answer carries ``X-Stop-Confirmation``. A stop of a run on a healthy worker
(neither the killed one nor the hung one's old instance) must come back ``confirmed``; its
``X-Stop-Confirmed-Ms`` gives the confirmation latency. Right after the SIGKILL, a few of the
killed worker's running runs are stopped before its peers release them: each of those
answers within the wait (plus a margin) and is never ``confirmed``: no loop was there to end.
The targets are rows of ``local.fleet.checks``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CONFIRMATION_HEADER = "X-Stop-Confirmation"
CONFIRMED_MS_HEADER = "X-Stop-Confirmed-Ms"
WAITED_MS_HEADER = "X-Stop-Waited-Ms"
DEAD_STOPS = 3
"""Runs of the killed worker stopped at once after the kill, before their release."""
ANSWER_MARGIN_SECONDS = 0.5
"""Above the wait, in the route's own figure (``X-Stop-Waited-Ms``: from the request to the
answer): the stop's write and send. The harness's own figure, at its client, adds the time
the stop queued behind the fleet's other requests in the one process that serves them and
drives the run; it is reported, not judged."""
CONFIRMED_MISSED = "a healthy worker's stop was not confirmed"
DEAD_CONFIRMED = "a stop of the killed worker's run was answered confirmed"
DEAD_SLOW = "a stop of the killed worker's run was not answered within the wait"


@dataclass
class Confirmations:
    """What the answers said of the loops."""

    outcomes: dict[str, int] = field(default_factory=dict)  # every 200, by header value
    healthy: int = 0  # stops of running runs on healthy workers
    healthy_confirmed: int = 0
    healthy_unconfirmed_examples: list[str] = field(default_factory=list)
    confirmed_ms: list[float] = field(default_factory=list)
    dead: dict[str, int] = field(default_factory=dict)  # the killed worker's, before release
    dead_answer_ms: list[float] = field(default_factory=list)  # at the harness's client
    dead_waited_ms: list[float] = field(default_factory=list)  # the route's own figure

    def answered(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def healthy_stop(self, conversation_id: str, outcome: str | None, ms: float | None) -> None:
        self.healthy += 1
        if outcome == "confirmed":
            self.healthy_confirmed += 1
            if ms is not None:
                self.confirmed_ms.append(ms)
        elif len(self.healthy_unconfirmed_examples) < 5:
            self.healthy_unconfirmed_examples.append(f"{conversation_id}: {outcome}")

    def dead_stop(self, outcome: str, answer_ms: float, waited_ms: float | None) -> None:
        self.dead[outcome] = self.dead.get(outcome, 0) + 1
        self.dead_answer_ms.append(answer_ms)
        self.dead_waited_ms.append(waited_ms if waited_ms is not None else float("inf"))

    def percentile(self, share: float) -> float | None:
        if not self.confirmed_ms:
            return None
        ordered = sorted(self.confirmed_ms)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
