"""`make fleet`, small: worker processes, the route over HTTP, moto's server, one SIGKILL.

The run is the harness of ``make fleet`` (the package local/fleet) at the size ``SMALL``: 4 workers,
two of them with their wall clocks 15 minutes ahead and behind, 24 conversations, each
started and stopped twice, one worker killed partway and another hung past the orphan age.
Only counts are asserted here, never times.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from local.fleet.checks import TIMING_FAILURES
from local.fleet.config import SMALL
from local.fleet.render import SECTION, existing_section, render_section, splice_section
from local.fleet.result import FleetResult, TrackedRun
from local.fleet.scenario import run_fleet
from local.fleet.tally import wrong_kill


@pytest.fixture(scope="module")
def fleet() -> FleetResult:
    return run_fleet(SMALL)


@pytest.mark.slow
def test_every_stop_is_answered_and_every_targeted_run_is_stopped(fleet: FleetResult) -> None:
    assert fleet.completed, fleet.failures
    planned = (
        SMALL.conversations * SMALL.cycles
        + fleet.extra_cycles
        + fleet.stops_repeated
        + fleet.shutdown_stops
    )
    assert fleet.stops_sent == planned
    assert fleet.stops_answered == fleet.stops_sent
    assert fleet.starts_failed == 0, fleet.start_errors
    assert fleet.never == 0
    assert fleet.should_stop > 0
    assert fleet.stopped == fleet.should_stop
    # Only the two ways a stop reaches a running loop; the rest would be a loop ending alone.
    assert fleet.via_other == {}
    assert fleet.via_queue + fleet.via_backstop == fleet.stopped


@pytest.mark.slow
def test_no_loop_ends_without_a_stop_for_its_run(fleet: FleetResult) -> None:
    assert fleet.wrong_kills == 0, fleet.wrong_kill_examples


@pytest.mark.slow
def test_the_row_shows_how_each_stopped_loop_ended(fleet: FleetResult) -> None:
    assert fleet.table_checked == fleet.stopped
    assert fleet.table_disagreements == 0, fleet.table_examples
    assert fleet.rows_not_stopped == 0


@pytest.mark.slow
def test_a_stop_as_the_workers_shut_down_still_marks_the_row(fleet: FleetResult) -> None:
    # Whichever ends the loop first, the cancel or the shutdown, the row says how.
    assert fleet.shutdown_stops == SMALL.shutdown_stops * (SMALL.workers - 1)
    assert fleet.shutdown_rows_unmarked == 0
    assert set(fleet.shutdown_rows_via) <= {"queue", "backstop", "worker_shutdown"}


@pytest.mark.slow
def test_the_killed_workers_queue_is_deleted_and_a_clean_shutdown_leaves_none(
    fleet: FleetResult,
) -> None:
    assert fleet.killed
    assert fleet.killed_queue_removed is True
    # Stops for its runs sent after the release: "not running", answered 200.
    assert fleet.stops_after_release_answered == fleet.stops_after_release
    assert fleet.queues_left == []
    assert fleet.clean_shutdowns == SMALL.workers - 1
    assert fleet.clean_exits == fleet.clean_shutdowns
    assert fleet.worker_errors == 0
    assert fleet.route_errors == 0
    # The one warning the route has reason for here: a claim naming the swept queue.
    assert set(fleet.route_warnings) <= {"cancel_queue_missing"}


@pytest.mark.slow
def test_the_killed_workers_runs_are_released_and_started_again_on_a_peer(
    fleet: FleetResult,
) -> None:
    assert fleet.released_after_s is not None  # no row names its instance, its queue is gone
    assert fleet.released_runs > 0
    assert set(fleet.victim_rows_via) <= {"worker_lost", "queue", "backstop"}
    assert fleet.restart_needed > 0
    assert fleet.restarted_on_peer == fleet.restart_needed


@pytest.mark.slow
def test_no_live_worker_is_declared_dead_whatever_its_clock(fleet: FleetResult) -> None:
    assert fleet.skewed_hosts == {"0": SMALL.skew_seconds, "1": -SMALL.skew_seconds}
    assert fleet.live_workers_declared == []
    assert fleet.live_queues_deleted == 0
    assert fleet.live_runs_released == 0


@pytest.mark.slow
def test_the_hung_worker_learns_it_was_declared_dead_and_stops_via_its_new_queue(
    fleet: FleetResult,
) -> None:
    assert fleet.hung
    assert fleet.hung_declared
    assert fleet.hung_rejoined_by == "worker_rejoined"
    # What it held across the hang ended (released: its loops halted when it learnt so).
    assert fleet.hung_runs_never == 0
    assert fleet.hung_rows_wrong == 0
    # What it claimed afterwards, under its new instance, is stopped via its new queue.
    assert fleet.after_hang_via.get("queue", 0) > 0
    assert set(fleet.after_hang_via) <= {"queue", "backstop"}


@pytest.mark.slow
def test_stops_are_confirmed_and_a_dead_workers_never_are(fleet: FleetResult) -> None:
    """The route waits (STOP_WAIT_SECONDS): healthy workers' stops come back confirmed (a
    share, not all: that depends on the machine, `make fleet` judges it); the killed
    worker's runs stopped before their release never do, and every one is answered."""
    confirmations = fleet.confirmations
    assert confirmations.healthy > 0
    assert confirmations.healthy_confirmed > 0
    assert confirmations.outcomes.get("confirmed", 0) >= confirmations.healthy_confirmed
    assert len(confirmations.confirmed_ms) == confirmations.healthy_confirmed
    assert sum(confirmations.dead.values()) > 0
    assert confirmations.dead.get("confirmed", 0) == 0
    assert set(confirmations.dead) <= {"unconfirmed", "worker-lost"}


@pytest.mark.slow
def test_the_run_meets_every_count_it_judges(fleet: FleetResult) -> None:
    # What the harness itself would fail on, bar the figures that are times or shares of
    # them (p99, the queue's share): those belong to `make fleet`, not to a test.
    assert [failure for failure in fleet.failures if failure not in TIMING_FAILURES] == []


def test_the_fleet_section_replaces_its_predecessor_and_keeps_the_rest() -> None:
    result = FleetResult(config=SMALL, stops_sent=3, stops_answered=3)
    first = render_section(result)
    document = "# Title\n\nintro\n\n## Load\n\nload table\n\n## Every test\n\nrows\n"

    once = splice_section(document, first)
    assert once.index(SECTION.begin) < once.index("## Every test")
    assert once.replace(first, "") == document.replace("## Every test", "\n## Every test", 1)

    second = render_section(FleetResult(config=SMALL, stops_sent=7, stops_answered=5))
    twice = splice_section(once, second)
    assert twice.count(SECTION.begin) == twice.count(SECTION.end) == 1
    assert existing_section(twice) == second
    assert "5 of 7" in twice
    assert "3 of 3" not in twice
    assert twice.replace(second, "") == once.replace(first, "")


def test_a_document_without_the_anchor_gets_the_section_at_its_end() -> None:
    section = render_section(FleetResult(config=SMALL))
    spliced = splice_section("# Title\n\ntext\n", section)
    assert spliced.startswith("# Title\n\ntext\n")
    assert spliced.endswith(section)


def _ended(at: float, run_id: str = "run-1") -> dict[str, Any]:
    stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    return {"event": "loop_ended", "run_id": run_id, "time": stamp, "_received": at + 5}


def test_a_loop_ending_before_its_stop_was_sent_is_a_wrong_kill() -> None:
    sent = 1_800_000_000.5
    run = TrackedRun("conversation", "run-1", host=0, cycle=0, stop_sent_at=sent)
    assert wrong_kill(_ended(sent + 0.2), run) is None
    # Stamped by the line's own time, not by when the harness read it.
    assert wrong_kill(_ended(sent - 0.5), run) == "it ended before its stop was sent"
    never_targeted = TrackedRun("conversation", "run-1", host=0, cycle=0)
    assert wrong_kill(_ended(sent), never_targeted) == "no stop was ever sent for it"
    assert wrong_kill(_ended(sent, "unknown"), None) == "a run the harness never started"
