"""Peer 2, the bare handler: no framework, JSON by hand, the floor for code overhead.

boto3 clients made at import; the key read once and kept; a stop is the same two calls as
ours (a conditional UpdateItem returning ALL_OLD, then the SQS send).
"""

import hmac
import json
import os
import re
import uuid
from datetime import UTC, datetime

import boto3

dynamodb = boto3.client("dynamodb")
sqs = boto3.client("sqs")
secrets = boto3.client("secretsmanager")

TABLE = os.environ["CONVERSATIONS_TABLE_NAME"]
QUEUE_URL = os.environ["CANCEL_QUEUE_URL"]
SECRET_ID = os.environ["SESSION_API_KEY_SECRET_ID"]
VALID_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_key: list[str] = []


def _respond(status: int, body: dict[str, str]) -> dict[str, object]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }


def handler(event: dict[str, object], context: object) -> dict[str, object]:
    headers: dict[str, str] = event.get("headers") or {}  # type: ignore[assignment]
    presented = headers.get("x-session-api-key")
    if not presented:
        return _respond(401, {"detail": "Unauthorized"})
    if not _key:
        _key.append(secrets.get_secret_value(SecretId=SECRET_ID)["SecretString"])
    if not hmac.compare_digest(presented.encode(), _key[0].encode()):
        return _respond(401, {"detail": "Unauthorized"})
    conversation_id = (event.get("pathParameters") or {}).get("conversation_id", "")  # type: ignore[union-attr]
    if not VALID_ID.fullmatch(conversation_id):
        return _respond(422, {"detail": "invalid conversation id"})
    stop_id = uuid.uuid4().hex
    try:
        old = dynamodb.update_item(
            TableName=TABLE,
            Key={"conversation_id": {"S": conversation_id}},
            UpdateExpression="SET #status = :stopped, stop_id = :stop_id",
            ConditionExpression="#status IN (:starting, :running)",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":stopped": {"S": "STOPPED"},
                ":starting": {"S": "STARTING"},
                ":running": {"S": "RUNNING"},
                ":stop_id": {"S": stop_id},
            },
            ReturnValues="ALL_OLD",
        )["Attributes"]
    except dynamodb.exceptions.ConditionalCheckFailedException:
        return _respond(
            200,
            {
                "status": "ok",
                "conversation_id": conversation_id,
                "message": "Conversation was not running",
                "conversation_status": "STOPPED",
            },
        )
    sqs.send_message(
        QueueUrl=QUEUE_URL,
        MessageBody=json.dumps(
            {
                "message_type": "close_session",
                "sid": conversation_id,
                "stop_id": stop_id,
                "requested_at": datetime.now(UTC).isoformat(),
            }
        ),
        MessageGroupId=conversation_id,
        MessageDeduplicationId=stop_id,
    )
    return _respond(
        200,
        {
            "status": "ok",
            "conversation_id": conversation_id,
            "message": "Conversation stopped successfully",
            "conversation_status": old["status"]["S"],
        },
    )
