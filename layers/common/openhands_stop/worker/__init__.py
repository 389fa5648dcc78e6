"""What an agent host embeds to stop its loops when a stop arrives.

``Worker`` registers and claims conversations (each claim a run of its own), runs their
agent loops as asyncio tasks (or adopts loops the host runs) and stops a run when the stop
that targets it arrives: from its cancel queue, or from its backstop read of the table.
``openhands_stop.wiring.build_worker(settings)`` makes one; ``configure_json_logging()``
sends its log lines (one JSON object each) to stderr, for hosts that have no logging set up.
"""

from openhands_stop.domain.models import RunEnd
from openhands_stop.worker.logs import configure_json_logging
from openhands_stop.worker.runs import AgentLoop, ClaimRejected, Halt, Outcome, Run
from openhands_stop.worker.settings import WorkerSettings
from openhands_stop.worker.worker import Worker, WorkerClosed

__all__ = [
    "AgentLoop",
    "ClaimRejected",
    "Halt",
    "Outcome",
    "Run",
    "RunEnd",
    "Worker",
    "WorkerClosed",
    "WorkerSettings",
    "configure_json_logging",
]
