"""The session key never appears in anything a run emits: logs (at DEBUG, everywhere),
stdout and stderr, HTTP and Lambda answers."""

from __future__ import annotations

import logging
import secrets
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openhands_stop.edge.app import create_app
from openhands_stop.edge.app import logger as app_logger
from openhands_stop.edge.settings import RouteSettings
from openhands_stop.lambda_entry import build_handler
from openhands_stop.wiring import build_service

from local.emulation import Stack, seed
from local.invoke import LambdaContext
from tests.reliability.faults import SECRETS_UNAVAILABLE, SQS_ACCESS_DENIED, watch_service
from tests.reliability.support import Evidence, rotate_key, stop_event


def test_the_key_never_appears_in_anything_a_run_emits(  # noqa: PLR0917
    wire_stack: Stack,
    no_backoff: None,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    evidence: Evidence,
) -> None:
    """Every path: stopped, not running, wrong/missing key, 422, 503, 500, a failing key
    refresh, the Lambda entry. Logging at DEBUG everywhere, Powertools asked to log events."""
    key = secrets.token_urlsafe(32)
    rotate_key(wire_stack, key)
    seed(wire_stack, {f"c{n}": "RUNNING" for n in range(6)})
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", "true")
    caplog.set_level(logging.DEBUG)
    env = {**wire_stack.function_environment(), "KEY_CACHE_SECONDS": "0.001"}
    service = build_service(RouteSettings.from_environment({**env, "KEY_REFRESH_MIN_SECONDS": "0"}))
    faults = watch_service(service)
    responses: list[Any] = []
    with TestClient(create_app(service)) as client:

        def stop(cid: str, presented: str | None) -> None:
            headers = {} if presented is None else {"X-Session-API-Key": presented}
            responses.append(client.post(f"/api/conversations/{cid}/stop", headers=headers))

        stop("c0", key)  # stopped
        stop("c0", key)  # not running (and the cancel re-sent)
        stop("c1", key[:-1])  # wrong key: a prefix of the right one
        stop("c1", None)
        stop("bad.id", key)  # 422
        faults.fail("SendMessage", SQS_ACCESS_DENIED)
        stop("c2", key)  # 500
        faults.clear()
        faults.fail("GetSecretValue", SECRETS_UNAVAILABLE)
        stop("c3", key)  # refresh fails, cached key serves
        faults.clear()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    handler = build_handler()
    lambda_answers = [
        handler(stop_event("c4", key), LambdaContext()),
        handler(stop_event("c5", "wrong"), LambdaContext()),
    ]
    captured = capfd.readouterr()
    formatter: Any = app_logger.registered_handler.formatter
    emitted = {
        "stdout": captured.out,
        "stderr": captured.err,
        "log records": "\n".join(repr(vars(record)) for record in caplog.records),
        # What Powertools writes to stdout in Lambda: the same records, as JSON lines.
        "JSON log lines": "\n".join(formatter.format(record) for record in caplog.records),
        "HTTP answers": "\n".join(f"{r.status_code} {dict(r.headers)} {r.text}" for r in responses),
        "Lambda answers": "\n".join(repr(answer) for answer in lambda_answers),
    }
    assert [r.status_code for r in responses] == [200, 200, 401, 401, 422, 500, 200]
    assert [a["statusCode"] for a in lambda_answers] == [200, 401]
    leaks = {where for where, text in emitted.items() if key in text}
    assert leaks == set(), f"the session key appeared in {sorted(leaks)}"
    assert len(caplog.records) > 0
    evidence(
        "Key",
        "the key in anything a run emits (DEBUG logging, POWERTOOLS_LOGGER_LOG_EVENT=true)",
        f"0 occurrences in {len(caplog.records)} log records (and their JSON lines, "
        f"{len(emitted['JSON log lines']):,} B), {len(captured.out):,} B stdout, "
        f"{len(captured.err):,} B stderr, {len(responses) + len(lambda_answers)} answers "
        "(200, 401, 422, 500, refresh failure, Lambda entry); no metrics or traces are emitted",
    )
