"""Names and limits more than one layer uses: AWS's limits, the table's names, HTTP headers.

Each is said once, here, and read wherever it is needed: by the route (``edge``), the
workers (``worker``), their adapters (``aws``), the settings, and the template's tests. This
module imports nothing of ours, so every layer may import it (tests/test_dependencies.py);
a name or a limit one module alone uses stays in that module.
"""

from __future__ import annotations

# SQS

LONG_POLL_SECONDS_MAX = 20
"""SQS's longest ``WaitTimeSeconds``: the longest a worker's receive waits for a cancel."""

QUEUE_NAME_MAX = 80
"""SQS's limit on a queue name, ``.fifo`` included."""

INSTANCE_HEX_DIGITS = 12
"""A worker instance's id: this many random hex digits. It names the instance's liveness item
and its queue (``<prefix><instance>.fifo``, which template.yaml's IAM grants as twelve ``?``)."""

WORKER_QUEUE_PREFIX_MAX = QUEUE_NAME_MAX - len(".fifo") - INSTANCE_HEX_DIGITS
"""The longest ``WORKER_QUEUE_PREFIX``: a worker queue's name must still fit SQS's limit."""

# The conversations table (template.yaml's ConversationsTable; tests/test_template_schema.py
# compares these with it).

PARTITION_KEY = "conversation_id"
"""The table's key: a conversation's id, or a worker's liveness item's key."""

RUNS_BY_WORKER_INDEX = "runs-by-worker"
"""The sparse index of rows by ``worker_instance``: the runs a worker holds."""

WORKERS_INDEX = "workers"
"""The sparse index of liveness items, keyed by ``roster`` and the item's key."""

WORKER_ITEM_KEY_PREFIX = "worker#"
"""A liveness item's key is this and the worker's instance: never a conversation id, which
cannot hold ``#``, so the route reads such an item as no conversation."""

# HTTP

SESSION_KEY_HEADER = "X-Session-API-Key"
"""OpenHands' session key header: what the route checks, and what the agent-server sidecar
presents to an OpenHands agent-server."""
