"""Peer 1, the typical template: what most FastAPI-on-Lambda tutorials deploy.

FastAPI wrapped by Mangum with its default options, a plain ``def`` route, a boto3
``resource`` for DynamoDB and boto3 clients for SQS and Secrets Manager made at import; each
request reads the secret, reads the item, updates it, then sends the cancel.
"""

import json
import os
import uuid
from datetime import UTC, datetime

import boto3
from fastapi import FastAPI, Header, HTTPException
from mangum import Mangum

dynamodb = boto3.resource("dynamodb")
table = dynamodb.Table(os.environ["CONVERSATIONS_TABLE_NAME"])
sqs = boto3.client("sqs")
secrets = boto3.client("secretsmanager")

app = FastAPI()


@app.post("/api/conversations/{conversation_id}/stop")
def stop_conversation(
    conversation_id: str, x_session_api_key: str | None = Header(default=None)
) -> dict[str, str]:
    secret = secrets.get_secret_value(SecretId=os.environ["SESSION_API_KEY_SECRET_ID"])
    if x_session_api_key != secret["SecretString"]:
        raise HTTPException(status_code=401, detail="Unauthorized")
    item = table.get_item(Key={"conversation_id": conversation_id}).get("Item")
    if not item or item.get("status") not in ("STARTING", "RUNNING"):
        return {
            "status": "ok",
            "conversation_id": conversation_id,
            "message": "Conversation was not running",
            "conversation_status": "STOPPED",
        }
    table.update_item(
        Key={"conversation_id": conversation_id},
        UpdateExpression="SET #status = :stopped",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={":stopped": "STOPPED"},
    )
    stop_id = uuid.uuid4().hex
    sqs.send_message(
        QueueUrl=os.environ["CANCEL_QUEUE_URL"],
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
    return {
        "status": "ok",
        "conversation_id": conversation_id,
        "message": "Conversation stopped successfully",
        "conversation_status": str(item["status"]),
    }


handler = Mangum(app)
