"""The session key: compared in constant time, never emitted, rotated without a restart,
and wrong keys cannot turn into a flood of Secrets Manager calls."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from openhands_stop.aws.clients import secretsmanager_client
from openhands_stop.aws.session_key import SecretsManagerKeySource
from openhands_stop.domain.models import utc_now
from openhands_stop.domain.ports import SecretVersion
from openhands_stop.edge import session_key as session_key_module
from openhands_stop.edge.app import create_app
from openhands_stop.edge.session_key import SessionKeyVerifier
from openhands_stop.edge.settings import RouteSettings
from openhands_stop.wiring import build_service

from local.emulation import Stack, seed
from tests.reliability.profile import HYPOTHESIS
from tests.reliability.support import Evidence, rotate_key, stop_event
from tests.support import AwsCallCounter

WRONG_KEY_REQUESTS = 10_000
GRACE = timedelta(hours=1)


class Clock:
    """Monotonic and wall clocks a test moves by hand."""

    def __init__(self) -> None:
        self.mono = 1_000.0
        self.offset = timedelta()

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> datetime:
        return utc_now() + self.offset

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.offset += timedelta(seconds=seconds)


class FixedSource:
    def __init__(self, current: str | None, previous: str | None = None) -> None:
        self.versions = {
            "AWSCURRENT": SecretVersion(current, utc_now()),
            "AWSPREVIOUS": SecretVersion(previous, utc_now() - timedelta(days=1)),
        }

    def fetch(self, stage: str) -> SecretVersion:
        return self.versions[stage]


def _verifier(source: Any, clock: Clock, **overrides: Any) -> SessionKeyVerifier:
    options: dict[str, Any] = {
        "cache_seconds": 300,
        "refresh_min_seconds": 15,
        "max_stale_seconds": 900,
        "previous_grace": GRACE,
    }
    options.update(overrides)
    return SessionKeyVerifier(source, monotonic=clock.monotonic, wall_clock=clock.wall, **options)


class CompareSpy:
    """Stands in for ``hmac`` in the verifier's module and records each comparison."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def compare_digest(self, a: bytes, b: bytes) -> bool:
        self.calls.append((len(a), len(b)))
        return hmac.compare_digest(a, b)


CURRENT = "current-key-" + "c" * 20
PREVIOUS = "previous-key-" + "p" * 20
presented_keys = st.one_of(
    st.text(min_size=1, max_size=64),
    st.text(min_size=1000, max_size=10_000),
    st.sampled_from([CURRENT, PREVIOUS, CURRENT[:-1], CURRENT + "x", CURRENT[0], PREVIOUS[1:]]),
    st.builds(lambda n: CURRENT[:n], st.integers(1, len(CURRENT))),
)


@HYPOTHESIS
@given(presented=presented_keys)
def test_every_comparison_is_32_bytes_against_every_accepted_key(
    presented: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = CompareSpy()
    monkeypatch.setattr(session_key_module, "hmac", spy)
    clock = Clock()
    verifier = _verifier(FixedSource(CURRENT, PREVIOUS), clock, refresh_min_seconds=10**9)
    verifier.verify(CURRENT)  # load AWSCURRENT; then AWSPREVIOUS (rotation within grace)
    verifier.verify(PREVIOUS)
    spy.calls.clear()

    accepted = verifier.verify(presented)

    assert accepted == (presented in (CURRENT, PREVIOUS))
    # Both accepted keys are compared, whatever matched first, and always digest to digest:
    # the presented key's length and content never shorten the work.
    assert spy.calls == [(32, 32), (32, 32)]


def test_comparison_path_evidence(monkeypatch: pytest.MonkeyPatch, evidence: Evidence) -> None:
    spy = CompareSpy()
    monkeypatch.setattr(session_key_module, "hmac", spy)
    clock = Clock()
    verifier = _verifier(FixedSource(None), clock, refresh_min_seconds=10**9)
    verifier.verify("cold start")  # fetches AWSCURRENT (empty) and AWSPREVIOUS
    spy.calls.clear()
    shapes = ["x", "y" * 10_000, CURRENT]
    results = [verifier.verify(key) for key in shapes]
    assert results == [False, False, False]
    assert spy.calls == [(32, 32)] * len(shapes)  # no key: compared against a placeholder
    evidence(
        "Key",
        "constant-time comparison (code path)",
        "sha256 of the presented key vs every accepted digest, 32 bytes to 32 bytes, all of "
        "them every time (1 B to 10 KB keys, match first or last, no key configured): "
        "hmac.compare_digest calls = number of accepted keys",
    )


def test_rotation_grace_and_new_key_without_restart(stack: Stack, evidence: Evidence) -> None:
    clock = Clock()
    old, new = "old-key-" + "o" * 24, "new-key-" + "n" * 24
    rotate_key(stack, old)
    verifier = _verifier(SecretsManagerKeySource(secretsmanager_client(), stack.secret_id), clock)
    assert verifier.verify(old)

    rotate_key(stack, new)  # AWSCURRENT -> new, AWSPREVIOUS -> old
    clock.advance(20)  # past KEY_REFRESH_MIN_SECONDS, well within the 300 s cache
    assert verifier.verify(new)  # refresh on a miss: no restart
    assert verifier.verify(old)  # AWSPREVIOUS, inside the grace period
    clock.advance(GRACE.total_seconds() - 60)
    assert verifier.verify(old)

    clock.advance(120)  # the grace period has ended (the cache has not expired)
    assert not verifier.verify(old)
    assert verifier.verify(new)
    assert not verifier.verify("anything-else")
    evidence(
        "Key",
        "rotation (put-secret-value: AWSCURRENT -> new, AWSPREVIOUS -> old)",
        f"new key accepted without a restart (refresh on miss); old key accepted during the "
        f"{GRACE.total_seconds():.0f} s grace (PREVIOUS_KEY_GRACE_SECONDS), refused after it",
    )


def test_rotation_over_http_with_real_clocks(stack: Stack, evidence: Evidence) -> None:
    seed(stack, {"c1": "RUNNING", "c2": "RUNNING", "c3": "RUNNING", "c4": "RUNNING"})
    env = {**stack.function_environment(), "KEY_REFRESH_MIN_SECONDS": "0"}
    old, new = "old-http-key-" + "o" * 20, "new-http-key-" + "n" * 20
    rotate_key(stack, old)
    graceful = build_service(RouteSettings.from_environment(env))
    # An instance only learns of a rotation when it refreshes: this one refreshes on every
    # request (a warm one would keep accepting the old key until its KEY_CACHE_SECONDS end).
    strict = build_service(
        RouteSettings.from_environment(
            {**env, "PREVIOUS_KEY_GRACE_SECONDS": "0", "KEY_CACHE_SECONDS": "0.001"}
        )
    )

    def stop(service: Any, cid: str, key: str) -> int:
        with TestClient(create_app(service)) as client:
            response = client.post(
                f"/api/conversations/{cid}/stop", headers={"X-Session-API-Key": key}
            )
            return int(response.status_code)

    assert stop(graceful, "c1", old) == 200
    assert stop(strict, "c1", old) == 200
    rotate_key(stack, new)
    statuses = {
        "new (grace 3600 s)": stop(graceful, "c2", new),
        "old (grace 3600 s)": stop(graceful, "c3", old),
        "old (grace 0 s)": stop(strict, "c4", old),
        "new (grace 0 s)": stop(strict, "c4", new),
    }
    assert statuses == {
        "new (grace 3600 s)": 200,
        "old (grace 3600 s)": 200,
        "old (grace 0 s)": 401,
        "new (grace 0 s)": 200,
    }
    evidence(
        "Key",
        "rotation over HTTP, two warm instances, real clocks",
        "; ".join(f"{name}: {status}" for name, status in statuses.items()),
    )


def test_wrong_keys_cannot_flood_secrets_manager(
    lambda_handler: Callable[[dict[str, Any]], dict[str, Any]],
    aws_calls: AwsCallCounter,
    evidence: Evidence,
) -> None:
    started = time.monotonic()
    statuses: set[int] = set()
    for n in range(WRONG_KEY_REQUESTS):
        event = stop_event(f"conv-{n % 100}", f"wrong-key-{n}")
        statuses.add(lambda_handler(event)["statusCode"])
    elapsed = time.monotonic() - started
    fetches = aws_calls.calls["secretsmanager.GetSecretValue"]
    # A cold fetch of AWSCURRENT (+ AWSPREVIOUS within grace), then at most one refresh per
    # KEY_REFRESH_MIN_SECONDS (15 s) however many keys miss.
    bound = 2 + int(elapsed // 15) + 1
    assert statuses == {401}
    assert fetches <= bound
    assert aws_calls.of("dynamodb") == aws_calls.of("sqs") == 0
    evidence(
        "Key",
        f"{WRONG_KEY_REQUESTS:,} requests with wrong keys (Lambda handler)",
        f"all 401 in {elapsed:.1f} s; {fetches} GetSecretValue calls (bound {bound}: cold "
        f"fetch + 1 per KEY_REFRESH_MIN_SECONDS); 0 DynamoDB/SQS calls",
    )
