"""What a fleet run saw: each run it tracked (``TrackedRun``) and the run's figures
(``FleetResult``), whose verdict is the checks table's (``local.fleet.checks``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from local.fleet import checks
from local.fleet.config import FleetConfig
from local.fleet.confirm import Confirmations
from local.fleet.costs import Costs


@dataclass
class TrackedRun:
    """One claim of one conversation: what the harness did to it and what it saw."""

    conversation_id: str
    run_id: str
    host: int
    cycle: int
    stop_sent_at: float | None = None  # wall clock, just before the stop was sent
    stopped: dict[str, Any] | None = None  # the worker's conversation_stopped
    ended: dict[str, Any] | None = None  # the host's loop_ended
    table_via: str | None = None
    table_at: str | None = None
    died_with_worker: bool = False
    at_shutdown: bool = False  # stopped as the workers shut down: counted apart
    table_problem: str | None = None  # what the row check found wrong
    confirmation: str | None = None  # its stop's X-Stop-Confirmation
    confirmed_ms: float | None = None  # and X-Stop-Confirmed-Ms

    @property
    def targeted(self) -> bool:
        return self.stop_sent_at is not None


@dataclass
class FleetResult:
    """The figures of one run; ``failures`` names every target missed."""

    config: FleetConfig
    seconds: float = 0.0
    completed: bool = False
    stops_sent: int = 0
    stops_answered: int = 0  # answered 200 (after retries on 503)
    stop_retries: int = 0
    stops_repeated: int = 0  # stops sent again after the loop was stopped (a client's retry)
    statuses: dict[str, int] = field(default_factory=dict)
    runs: int = 0
    runs_targeted: int = 0
    via_queue: int = 0
    via_backstop: int = 0
    backstop_raced: int = 0  # backstop stops whose cancel then arrived, as a duplicate
    via_other: dict[str, int] = field(default_factory=dict)
    never: int = 0
    died_with_worker: int = 0
    died_stop_in_flight: int = 0  # of those, runs whose stop had been sent before the kill
    starts_lost_with_worker: int = 0
    stops_after_release: int = 0  # stops of the killed worker's runs, once released
    stops_after_release_answered: int = 0
    victim_instance: str | None = None
    released_runs: int = 0  # the killed worker's runs whose rows show worker_lost
    victim_rows_via: dict[str, int] = field(default_factory=dict)
    released_after_s: float | None = None  # from the kill: no row names it, queue gone
    extra_cycles: int = 0  # cycles run to start a released conversation again
    restart_needed: int = 0  # conversations of the killed worker started again on a peer
    restarted_on_peer: int = 0
    live_runs_released: int = 0
    live_workers_declared: list[str] = field(default_factory=list)
    live_queues_deleted: int = 0
    skewed_hosts: dict[str, float] = field(default_factory=dict)
    hung: bool = False
    hung_instance: str | None = None
    hang_seconds: float = 0.0
    hung_declared: bool = False
    hung_rejoined_by: str | None = None
    hung_queue_missing_seen: int = 0
    hung_runs_halted_at_rejoin: int = 0
    hung_runs: int = 0  # held by the hung worker across its hang: counted apart
    hung_runs_via: dict[str, int] = field(default_factory=dict)
    hung_runs_never: int = 0
    hung_rows_wrong: int = 0
    after_hang_runs: int = 0  # claimed by the hung worker's new instance, stopped
    after_hang_via: dict[str, int] = field(default_factory=dict)
    costs: Costs = field(default_factory=Costs)
    confirmations: Confirmations = field(default_factory=Confirmations)
    wrong_kills: int = 0
    wrong_kill_examples: list[str] = field(default_factory=list)
    table_checked: int = 0
    table_disagreements: int = 0
    killed_rows_unwritten: int = 0
    table_examples: list[str] = field(default_factory=list)
    starts_failed: int = 0
    start_retries: int = 0
    start_errors: dict[str, int] = field(default_factory=dict)
    moved_restarts: int = 0
    cancels_handled: dict[str, int] = field(default_factory=dict)
    latencies_missing: int = 0  # stopped runs whose line had no stop_to_stopped_ms
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    killed: bool = False
    killed_runs_live: int = 0
    killed_queue_removed: bool | None = None
    killed_queue_removed_after_s: float | None = None
    queues_left: list[str] = field(default_factory=list)
    clean_exits: int = 0
    clean_shutdowns: int = 0
    rows_not_stopped: int = 0
    shutdown_stops: int = 0
    shutdown_rows_unmarked: int = 0
    shutdown_rows_via: dict[str, int] = field(default_factory=dict)
    stack_queue_left: int = 0
    worker_errors: int = 0
    route_errors: int = 0
    route_warnings: dict[str, int] = field(default_factory=dict)  # by event
    harness_failures: list[str] = field(default_factory=list)  # no table row: the run itself

    @property
    def failures(self) -> list[str]:
        """What the run itself could not do, then every target of the checks table missed."""
        return [*self.harness_failures, *checks.failures(checks.table(self))]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def stopped(self) -> int:
        return self.via_queue + self.via_backstop + sum(self.via_other.values())

    @property
    def should_stop(self) -> int:
        """Runs a stop targeted, less those that died with the killed worker."""
        return self.runs_targeted - self.died_with_worker

    @property
    def queue_share(self) -> float:
        """Of the runs that should have stopped, the share stopped via the queue."""
        return self.via_queue / self.should_stop if self.should_stop else 0.0
