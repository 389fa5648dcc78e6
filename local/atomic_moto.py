"""Make moto's DynamoDB item writes atomic, as DynamoDB's are.

moto evaluates a ConditionExpression and applies the write without a lock (and reads the
``ALL_OLD`` image before the write, in its response layer), so two threads of its server can
both pass ``status = STARTING`` on the same item, or return a stale old image: races real
DynamoDB never allows (conditional writes are serialised per item). Tests of races, and
the load run, call ``serialize_dynamodb_writes()`` in the process that runs moto, so what
they prove is about the product and not about the emulation's gaps.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_LOCK = threading.RLock()
_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "get_item")
_MARK = "_openhands_stop_serialized"


def serialize_dynamodb_writes() -> None:
    """Wrap moto's DynamoDB item operations, request to response, in one lock (idempotent)."""
    from moto.dynamodb.responses import DynamoHandler

    for name in _WRITES:
        original = getattr(DynamoHandler, name)
        if getattr(original, _MARK, False):
            continue

        def locked(*args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with _LOCK:
                return __original(*args, **kwargs)

        wrapped = functools.wraps(original)(locked)
        setattr(wrapped, _MARK, True)
        setattr(DynamoHandler, name, wrapped)
