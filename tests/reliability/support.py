"""Helpers for the reliability suites: the evidence a test records, the app on a real
uvicorn socket, a key rotation, a Lambda event."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI

from local.emulation import Stack, free_port

Evidence = Callable[[str, str, str], None]
"""The ``evidence`` fixture: record (family, case, measured outcome) for the generated report."""


class LiveServer:
    """The app on uvicorn, on a free 127.0.0.1 port, in a thread."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def rotate_key(stack: Stack, new_key: str) -> None:
    """Put a new value in the session key secret, as `put-secret-value` does in a rotation:
    AWSCURRENT moves to it, AWSPREVIOUS to the value before."""
    stack.client("secretsmanager").put_secret_value(SecretId=stack.secret_id, SecretString=new_key)


def stop_event(cid: str, key: str | None, **overrides: Any) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event for a stop of ``cid``, presenting ``key``
    (no header when None)."""
    headers = {"content-length": "0", "host": "api.example.com"}
    if key is not None:
        headers["x-session-api-key"] = key
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "POST /api/conversations/{conversation_id}/stop",
        "rawPath": f"/api/conversations/{cid}/stop",
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "api.example.com",
            "http": {
                "method": "POST",
                "path": f"/api/conversations/{cid}/stop",
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.10",
                "userAgent": "test",
            },
            "requestId": "req",
            "routeKey": "POST /api/conversations/{conversation_id}/stop",
            "stage": "$default",
            "time": "29/Nov/2026:21:30:00 +0000",
            "timeEpoch": 1795987800000,
        },
        "isBase64Encoded": False,
    }
    event.update(overrides)
    return event
