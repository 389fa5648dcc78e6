"""Reset one conversation's row to STOPPED, when no worker can read it as a run.

    make reset-conversation TABLE=<ConversationsTableName> ID=<conversation id> [FORCE=1]

A row whose status this code does not know (``ARCHIVED``, ``running``, a number) can be
neither stopped nor registered: the route reads it as no conversation and answers "not
running", ``register`` refuses it. This sets ``status`` to ``STOPPED`` and removes the run
fields (run, worker, queue, stop), so the next ``register`` starts it afresh; every other
attribute is kept, and no other row is touched. A ``STARTING`` or ``RUNNING`` row is refused
unless ``--force``: stop it with the route instead (a dead worker's runs are released by its
peers). A forced reset of a run a worker still holds stops that run through the worker's
backstop, as any stop does. Prints what it did, never more than the id and the old status.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import ClientError
from openhands_stop.domain.models import CONVERSATION_ID_PATTERN, utc_now

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

RUN_FIELDS = (
    "run_id",
    "worker_id",
    "worker_instance",
    "cancel_queue_url",
    "claimed_at",
    "stop_id",
    "stop_request_id",
    "stopped_at",
    "stopped_from",
    "stopped_version",
    "loop_stopped_at",
    "loop_stopped_via",
)


class NotReset(Exception):
    """Nothing was written: the reason is the message."""


def reset(client: DynamoDBClient, table: str, conversation_id: str, *, force: bool) -> str:
    """Reset the row; the status it had (as stored). Raises ``NotReset``."""
    if not re.fullmatch(CONVERSATION_ID_PATTERN, conversation_id):
        raise NotReset("not a conversation id (1-128 of A-Z a-z 0-9 _ -)")
    condition = "attribute_exists(conversation_id)"
    values: dict[str, Any] = {
        ":stopped": {"S": "STOPPED"},
        ":now": {"S": utc_now().isoformat(timespec="milliseconds")},
    }
    if not force:
        condition += " AND NOT (#status IN (:starting, :running))"
        values[":starting"] = {"S": "STARTING"}
        values[":running"] = {"S": "RUNNING"}
    try:
        answer = client.update_item(
            TableName=table,
            Key={"conversation_id": {"S": conversation_id}},
            UpdateExpression=(
                f"SET #status = :stopped, updated_at = :now, reset_at = :now "
                f"REMOVE {', '.join(RUN_FIELDS)}"
            ),
            ConditionExpression=condition,
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=values,
            ReturnValues="ALL_OLD",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        old: dict[str, Any] | None = error.response.get("Item")  # type: ignore[assignment]
        if not old:
            raise NotReset("no such conversation") from None
        raise NotReset(
            f"it is {_status(old)}: stop it with the route (or --force, FORCE=1)"
        ) from None
    return _status(answer.get("Attributes", {}))


def _status(item: dict[str, Any]) -> str:
    value = item.get("status")
    if isinstance(value, dict) and len(value) == 1:
        kind, text = next(iter(value.items()))
        return f"{text!s:.40} ({kind})" if kind != "S" else f"{text!s:.40}"
    return "without a status"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", required=True, help="the ConversationsTableName output")
    parser.add_argument("--conversation-id", required=True)
    parser.add_argument("--force", action="store_true", help="even a STARTING or RUNNING row")
    args = parser.parse_args(argv)
    client: DynamoDBClient = boto3.client("dynamodb")
    try:
        was = reset(client, args.table, args.conversation_id, force=args.force)
    except NotReset as refused:
        print(f"not reset: {args.conversation_id}: {refused}", file=sys.stderr)
        return 1
    print(f"reset {args.conversation_id}: {was} -> STOPPED (run fields removed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
