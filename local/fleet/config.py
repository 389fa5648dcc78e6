"""The size of a fleet run and its workers' timings: ``FULL`` (``make fleet``) and ``SMALL``
(what pytest runs)."""

from __future__ import annotations

from dataclasses import dataclass

from local.emulation import AWS_DUMMY_ENV, Stack


@dataclass(frozen=True)
class FleetConfig:
    """The size of a run and the workers' timings (every worker gets the same)."""

    workers: int = 8
    conversations: int = 400
    cycles: int = 3
    kill: bool = True
    kill_after: float = 0.4  # the share of stops done when the victim is killed
    move_share: float = 0.5  # restarts that go to another worker
    repeat_share: float = 0.25  # stops sent again once carried out, right before the restart
    in_flight: int = 48  # conversations between a start and a verified stop at once
    dwell_seconds: tuple[float, float] = (0.2, 1.5)  # how long a loop runs before its stop
    backstop_seconds: float = 2.0
    heartbeat_seconds: float = 2.0
    orphan_seconds: float = 10.0
    wait_time_seconds: int = 2
    stop_wait_seconds: float = 5.0  # the route's STOP_WAIT_SECONDS: a confirmed stop
    shutdown_stops: int = 8  # runs per live worker held idle, then stopped at shutdown
    idle_seconds: float = 10.0  # how long those runs are held before their stops
    skew_seconds: float = 900.0  # host 0's wall clock this far ahead, host 1's behind
    hang: bool = True
    hang_after: float = 0.6  # the share of stops done when a worker's event loop blocks
    max_seconds: float = 600.0
    seed: int = 10

    @property
    def stops(self) -> int:
        return self.conversations * self.cycles

    @property
    def release_bound(self) -> float:
        """A dead worker's runs are released within this (issue 17's target)."""
        return self.orphan_seconds + 2 * self.heartbeat_seconds + 5

    @property
    def hang_seconds(self) -> float:
        """Long enough for any judge to have declared the hung worker dead."""
        return self.orphan_seconds + 2 * self.heartbeat_seconds + 6

    def offset(self, index: int) -> float:
        """The wall-clock offset host ``index`` runs with: 0 ahead, 1 behind, the rest none."""
        return {0: self.skew_seconds, 1: -self.skew_seconds}.get(index, 0.0)

    def worker_environment(self, stack: Stack, prefix: str) -> dict[str, str]:
        """The one environment every worker of the fleet gets."""
        assert stack.endpoint_url is not None
        return {
            **AWS_DUMMY_ENV,
            "AWS_ENDPOINT_URL": stack.endpoint_url,
            "CONVERSATIONS_TABLE_NAME": stack.table_name,
            "CANCEL_QUEUE_URL": stack.stack_queue_url,
            "WORKER_QUEUE_PREFIX": prefix,
            "QUEUE_HEARTBEAT_SECONDS": str(self.heartbeat_seconds),
            "ORPHAN_QUEUE_SECONDS": str(self.orphan_seconds),
            "BACKSTOP_SECONDS": str(self.backstop_seconds),
            "WAIT_TIME_SECONDS": str(self.wait_time_seconds),
            "CLEANUP_TIMEOUT_SECONDS": "2",
            "SHUTDOWN_GRACE_SECONDS": "3",
        }

    def settings_text(self) -> str:
        """The workers' settings, as the cost section names them."""
        return (
            f"{self.workers} workers, `QUEUE_HEARTBEAT_SECONDS={self.heartbeat_seconds:g}`, "
            f"`BACKSTOP_SECONDS={self.backstop_seconds:g}`, "
            f"`WAIT_TIME_SECONDS={self.wait_time_seconds}`"
        )


FULL = FleetConfig()
SMALL = FleetConfig(
    workers=4,
    conversations=24,
    cycles=2,
    in_flight=12,
    stop_wait_seconds=2.0,
    heartbeat_seconds=1.0,
    orphan_seconds=4.0,
    shutdown_stops=6,
    idle_seconds=3.0,
    max_seconds=240.0,
)
"""What pytest runs (tests/fleet): the same harness, small."""
