"""The worker's settings, from environment variables an agent host's deployment sets."""

from __future__ import annotations

import os
import socket

from pydantic import Field, model_validator

from openhands_stop.constants import LONG_POLL_SECONDS_MAX
from openhands_stop.settings import StackResources


def default_worker_id() -> str:
    """Host and process: unique per live worker, readable in the table and the logs."""
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerSettings(StackResources):
    """The stack's resources (``WORKER_QUEUE_PREFIX`` set: a fleet worker with a queue of
    its own; unset: the one reader of ``CANCEL_QUEUE_URL``), who this worker is, and the
    timings of a stop."""

    # Liveness (docs/worker.md): how often a worker adds one to its liveness counter (and
    # watches its two successors), and how long, on the watcher's own monotonic clock, a
    # counter must stay still for its worker to be judged dead: its runs are released and its
    # queue deleted within ORPHAN + 2 x HEARTBEAT seconds of its death (45 s by default).
    queue_heartbeat_seconds: float = Field(
        alias="QUEUE_HEARTBEAT_SECONDS", default=5, gt=0, le=3600, allow_inf_nan=False
    )
    orphan_queue_seconds: float = Field(
        alias="ORPHAN_QUEUE_SECONDS", default=35, gt=0, le=86400, allow_inf_nan=False
    )
    worker_id: str = Field(alias="WORKER_ID", default_factory=default_worker_id, min_length=1)
    # SQS's long poll: a cancel is delivered as soon as it arrives, whatever this is.
    wait_time_seconds: int = Field(
        alias="WAIT_TIME_SECONDS", default=LONG_POLL_SECONDS_MAX, ge=0, le=LONG_POLL_SECONDS_MAX
    )
    # How often the backstop looks for runs held here whose rows say they are over. It is
    # what carries out a stop whose cancel was lost, so it cannot be turned off.
    backstop_seconds: float = Field(
        alias="BACKSTOP_SECONDS", default=5, gt=0, le=3600, allow_inf_nan=False
    )
    # The backstop is for lost cancels: it acts on a stop recorded at least this long ago,
    # so it does not race a cancel still on its way (tests/worker/test_backstop.py).
    backstop_grace_seconds: float = Field(alias="BACKSTOP_GRACE_SECONDS", default=2, ge=0)
    # How long a cancelled loop may take to clean up before its message is deleted anyway.
    cleanup_timeout_seconds: float = Field(alias="CLEANUP_TIMEOUT_SECONDS", default=10, gt=0)
    # On SIGTERM: how long to wait for the poll in flight and the stops being carried out.
    # Below the usual 30 s orchestrators give between SIGTERM and SIGKILL.
    shutdown_grace_seconds: float = Field(alias="SHUTDOWN_GRACE_SECONDS", default=25, ge=0)

    @model_validator(mode="after")
    def _orphans_outlive_heartbeats(self) -> WorkerSettings:
        if self.orphan_queue_seconds <= 2 * self.queue_heartbeat_seconds:
            raise ValueError(
                "ORPHAN_QUEUE_SECONDS must exceed twice QUEUE_HEARTBEAT_SECONDS, or a live "
                "worker could be judged dead between two of its beats"
            )
        return self
