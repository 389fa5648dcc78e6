"""What every process of the stack is told the same way: the resources, from the environment.

The function (``edge.settings``) and the agent workers (``worker.settings``) extend this one
model, so a resource has one name, one variable and one check wherever it is read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Self

from pydantic import BaseModel, ConfigDict, Field

from openhands_stop.constants import WORKER_QUEUE_PREFIX_MAX


class EnvironmentSettings(BaseModel):
    """Settings read once per process from environment variables (the fields' aliases)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Self:
        return cls.model_validate(dict(os.environ if environ is None else environ))


class StackResources(EnvironmentSettings):
    """The stack's table and queues, as template.yaml's outputs name them."""

    table_name: str = Field(alias="CONVERSATIONS_TABLE_NAME", min_length=1)
    # The stack queue: cancels of never-claimed runs, and of runs whose queue is gone.
    stack_queue_url: str = Field(alias="CANCEL_QUEUE_URL", min_length=1)
    # The fleet's workers' own queues are named under it (the stack's `WorkerQueuePrefix`):
    # the route sends a run's cancel there only, and each worker makes its queue there.
    worker_queue_prefix: str = Field(
        alias="WORKER_QUEUE_PREFIX", default="", max_length=WORKER_QUEUE_PREFIX_MAX
    )
