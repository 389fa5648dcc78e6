"""CodeDeploy's BeforeAllowTraffic hook: the new version answers the stop route before `live`
moves to it.

CodeDeploy calls this once per deployment, before any traffic shifts. It invokes the new
version (``TARGET_VERSION_ARN``, the template's ``StopConversationFunction.Version``) directly
with three API Gateway (HTTP API, v2) events, as the smoke check's first steps do:

1. no ``X-Session-API-Key``: ``401``;
2. a wrong key: ``401``;
3. the key from Secrets Manager, for a conversation id nobody has (``pre-traffic-<random>``):
   ``200`` with "Conversation was not running".

Together: the version's init runs (layer, imports, settings), its key check refuses, it reads
the key from the secret it names, and it reaches its table (the conditional write finds no
row, so nothing is written and no cancel is sent). Then it reports ``Succeeded`` or ``Failed``
to CodeDeploy; ``Failed`` stops the deployment, `live` stays where it was, and the stack
update rolls back. The key is never logged; a failure logs the check, the status and the
answer's body (which never carries the key).

Uses the Lambda runtime's boto3 (no layer: the function's layer carries a botocore cut down
to the function's own services).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from typing import Any

NOT_RUNNING = "Conversation was not running"
ROUTE_KEY = "POST /api/conversations/{conversation_id}/stop"


class CheckFailed(Exception):
    """The new version did not answer as a working one does."""


def stop_event(conversation_id: str, key: str | None) -> dict[str, Any]:
    """An HTTP API (payload 2.0) event for the stop route, as API Gateway sends it."""
    path = f"/api/conversations/{conversation_id}/stop"
    headers = {"content-length": "0", "user-agent": "openhands-stop-pre-traffic-hook"}
    if key is not None:
        headers["x-session-api-key"] = key
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": ROUTE_KEY,
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "pre-traffic-hook",
            "apiId": "pre-traffic-hook",
            "domainName": "pre-traffic-hook.invalid",
            "domainPrefix": "pre-traffic-hook",
            "http": {
                "method": "POST",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers["user-agent"],
            },
            "requestId": f"pre-traffic-{secrets.token_hex(8)}",
            "routeKey": ROUTE_KEY,
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "pathParameters": {"conversation_id": conversation_id},
        "isBase64Encoded": False,
    }


def session_key(secret_string: str) -> str:
    """The key in the secret: the value itself, or a JSON document's ``session_api_key``."""
    value = secret_string.strip()
    if value.startswith("{"):
        try:
            document = json.loads(value)
        except ValueError:
            return value
        if isinstance(document, dict) and isinstance(document.get("session_api_key"), str):
            return str(document["session_api_key"]).strip()
    return value


def check_version(lambda_client: Any, key: str, version_arn: str) -> list[str]:
    """Run the three checks against ``version_arn``; what passed, or CheckFailed."""
    conversation_id = f"pre-traffic-{secrets.token_hex(6)}"
    wrong = "pre-traffic-wrong-key-" + secrets.token_hex(16)
    checks = [
        ("without a key", None, 401, None),
        ("with a wrong key", wrong, 401, None),
        ("with the key, an unknown conversation", key, 200, NOT_RUNNING),
    ]
    passed = []
    for name, presented, status, message in checks:
        answer = _invoke(lambda_client, version_arn, stop_event(conversation_id, presented))
        body = _json(answer.get("body"))
        if answer.get("statusCode") != status or (message and body.get("message") != message):
            shown = {k: v for k, v in body.items() if k != "headers"}
            raise CheckFailed(f"{name}: answered {answer.get('statusCode')} {shown}")
        passed.append(f"{name}: {status}")
    return passed


def _invoke(lambda_client: Any, version_arn: str, event: dict[str, Any]) -> dict[str, Any]:
    response = lambda_client.invoke(
        FunctionName=version_arn,
        InvocationType="RequestResponse",
        Payload=json.dumps(event).encode(),
    )
    payload = response["Payload"].read()
    if response.get("FunctionError"):
        raise CheckFailed(f"the version failed: {response['FunctionError']} {payload[:500]!r}")
    answer = json.loads(payload)
    if not isinstance(answer, dict):
        raise CheckFailed(f"the version answered {type(answer).__name__}, not an API response")
    return answer


def _json(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def run(event: dict[str, Any], clients: dict[str, Any], env: dict[str, str]) -> str:
    """Check the version and report to CodeDeploy; the status reported."""
    status = "Failed"
    try:
        secret = clients["secretsmanager"].get_secret_value(
            SecretId=env["SESSION_API_KEY_SECRET_ID"]
        )
        passed = check_version(
            clients["lambda"],
            session_key(secret.get("SecretString", "")),
            env["TARGET_VERSION_ARN"],
        )
        status = "Succeeded"
        _log("pre_traffic_passed", version=env["TARGET_VERSION_ARN"], checks=passed)
    except CheckFailed as failed:
        _log("pre_traffic_failed", version=env.get("TARGET_VERSION_ARN"), reason=str(failed))
    except Exception as error:  # any failure must still reach CodeDeploy, as Failed
        _log("pre_traffic_error", version=env.get("TARGET_VERSION_ARN"), error=type(error).__name__)
    clients["codedeploy"].put_lifecycle_event_hook_execution_status(
        deploymentId=event["DeploymentId"],
        lifecycleEventHookExecutionId=event["LifecycleEventHookExecutionId"],
        status=status,
    )
    return status


def _log(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


def handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    import boto3  # noqa: PLC0415 - the runtime's; only the handler needs it

    clients = {name: boto3.client(name) for name in ("lambda", "codedeploy", "secretsmanager")}
    return {"status": run(event, clients, dict(os.environ))}
