"""Make moto's DynamoDB item writes atomic, as DynamoDB's are: serialised, all or nothing.

moto evaluates a ConditionExpression and applies the write without a lock (and reads the
``ALL_OLD`` image before the write, in its response layer), so two threads of its server can
both pass ``status = STARTING`` on the same item, or return a stale old image: races real
DynamoDB never allows (conditional writes are serialised per item). Tests of races, and
the load run, call ``serialize_dynamodb_writes()`` in the process that runs moto, so what
they prove is about the product and not about the emulation's gaps.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import threading
from collections.abc import Iterator
from typing import Any

_LOCK = threading.RLock()
_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "get_item")
_MARK = "_openhands_stop_serialized"


@contextlib.contextmanager
def _all_or_nothing(handler: Any, operation: str) -> Iterator[None]:
    """moto applies an update's SET clauses before a later clause fails validation (an ADD
    on a string, say); DynamoDB applies nothing. Restore the item when the update raises."""
    if operation != "update_item":
        yield
        return
    table = handler.dynamodb_backend.get_table(handler.body["TableName"])
    before = handler.dynamodb_backend.get_item(handler.body["TableName"], handler.body["Key"])
    saved = copy.deepcopy(before.attrs) if before is not None else None
    try:
        yield
    except Exception:
        after = handler.dynamodb_backend.get_item(handler.body["TableName"], handler.body["Key"])
        if after is not None and saved is not None:
            after.attrs = saved
        elif after is not None:
            hash_key = after.hash_key
            table.delete_item(hash_key, after.range_key)
        raise


def serialize_dynamodb_writes() -> None:
    """Wrap moto's DynamoDB item operations, request to response, in one lock (idempotent)."""
    from moto.dynamodb.responses import DynamoHandler

    for name in _WRITES:
        original = getattr(DynamoHandler, name)
        if getattr(original, _MARK, False):
            continue

        def locked(*args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with _LOCK, _all_or_nothing(args[0], __original.__name__):
                return __original(*args, **kwargs)

        wrapped = functools.wraps(original)(locked)
        setattr(wrapped, _MARK, True)
        setattr(DynamoHandler, name, wrapped)
