"""What an agent host embeds to stop its loops when a stop arrives.

``Worker`` claims conversations, runs their agent loops as asyncio tasks and stops them on
``close_session``: from its cancel queue, or from its backstop read of the table.
"""

from openhands_stop.worker.runtime import (
    AgentLoop,
    ClaimRejected,
    Outcome,
    Worker,
    WorkerClosed,
)
from openhands_stop.worker.settings import WorkerSettings

__all__ = ["AgentLoop", "ClaimRejected", "Outcome", "Worker", "WorkerClosed", "WorkerSettings"]
