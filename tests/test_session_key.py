"""The session key: where it comes from, how it is compared, and that nothing fails open."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from moto import mock_aws
from openhands_stop.aws.session_key import key_from_secret_string
from openhands_stop.domain.errors import DependencyFailure
from openhands_stop.domain.ports import SecretVersion
from openhands_stop.edge.app import create_app
from openhands_stop.edge.session_key import SessionKeyVerifier
from openhands_stop.edge.settings import RouteSettings
from openhands_stop.wiring import build_service

from local.emulation import Stack, create_stack, seed
from tests.support import AwsCallCounter


@pytest.mark.parametrize(
    ("secret_string", "key"),
    [
        ("plain-key", "plain-key"),
        ("  padded-key\n", "padded-key"),
        ('{"session_api_key": "json-key"}', "json-key"),
        ('{"session_api_key": "json-key", "other": 1}', "json-key"),
        ("", None),
        ("   ", None),
        (None, None),
        ('{"other": "x"}', None),
        ('{"session_api_key": ""}', None),
        ('{"session_api_key": 42}', None),
        ("[1,2]", "[1,2]"),
        ("{not json", None),  # a space: no valid key
        ("{not-json", "{not-json"),
        (json.dumps({"session_api_key": "  json-key\n"}), "json-key"),  # trimmed as a plain one
        ('{"session_api_key": " \t "}', None),
        ("[1, 2]", None),
        ("with space", None),
        ("caf\u00e9", None),
        ('{"session_api_key": "caf\u00e9"}', None),
        ("tab\tinside", None),
        ("!~" + "x" * 46, "!~" + "x" * 46),
    ],
)
def test_the_key_is_the_secret_string_or_its_session_api_key(
    secret_string: str | None, key: str | None
) -> None:
    assert key_from_secret_string(secret_string) == key


def app_for_secret(secret_string: str | None) -> tuple[Stack, TestClient]:
    stack = create_stack(None, session_key=secret_string, suffix=f"-{abs(hash(secret_string))}")
    seed(stack)
    settings = RouteSettings.from_environment(stack.function_environment())
    return stack, TestClient(create_app(build_service(settings)))


@pytest.mark.parametrize(
    ("secret_string", "presented", "status"),
    [
        ("plain-key", "plain-key", 200),
        ('{"session_api_key": "json-key"}', "json-key", 200),
        ('{"session_api_key": "json-key"}', '{"session_api_key": "json-key"}', 401),
        ("   ", "", 401),
        ("   ", "anything", 401),
        ('{"session_api_key": ""}', "", 401),
        (None, "anything", 401),
        ('{"session_api_key": " json-key "}', "json-key", 200),
        ("key with spaces", "key with spaces", 401),
    ],
    ids=[
        "plain",
        "json",
        "json-document-is-not-the-key",
        "blank",
        "blank-any",
        "json-empty",
        "no-value",
        "json-trimmed",
        "not-visible-ascii-is-never-a-key",
    ],
)
def test_the_route_accepts_exactly_the_configured_key(
    secret_string: str | None, presented: str, status: int
) -> None:
    with mock_aws():
        _, client = app_for_secret(secret_string)
        response = client.post(
            "/api/conversations/demo-running/stop", headers={"X-Session-API-Key": presented}
        )
    assert response.status_code == status


def test_a_deleted_secret_refuses_every_request(stack: Stack) -> None:
    stack.client("secretsmanager").delete_secret(
        SecretId=stack.secret_id, ForceDeleteWithoutRecovery=True
    )
    settings = RouteSettings.from_environment(stack.function_environment())
    client = TestClient(create_app(build_service(settings)))

    response = client.post(
        "/api/conversations/demo-running/stop",
        headers={"X-Session-API-Key": "local-demo-session-key"},
    )

    assert response.status_code == 401


class FakeSource:
    """A key source whose answers the test sets, counting fetches per stage."""

    def __init__(self, current: str | None, created: datetime | None = None) -> None:
        self.versions = {"AWSCURRENT": SecretVersion(current, created)}
        self.fetches: list[str] = []
        self.failure: DependencyFailure | None = None

    def fetch(self, stage: str) -> SecretVersion:
        self.fetches.append(stage)
        if self.failure:
            raise self.failure
        return self.versions.get(stage, SecretVersion(None, None))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def verifier(
    source: FakeSource,
    clock: Clock,
    *,
    cache_seconds: float = 300,
    max_stale_seconds: float = 900,
) -> SessionKeyVerifier:
    return SessionKeyVerifier(
        source,
        cache_seconds=cache_seconds,
        refresh_min_seconds=15,
        max_stale_seconds=max_stale_seconds,
        previous_grace=timedelta(hours=1),
        monotonic=clock,
    )


def test_warm_checks_use_the_cached_key_and_expire_after_the_cache_period() -> None:
    source, clock = FakeSource("k1"), Clock()
    check = verifier(source, clock)

    assert check.verify("k1")
    assert check.verify("k1")
    assert source.fetches == ["AWSCURRENT"]
    clock.now += 301
    assert check.verify("k1")
    assert source.fetches == ["AWSCURRENT", "AWSCURRENT"]


def test_a_new_key_is_accepted_without_a_restart_and_misses_are_rate_limited() -> None:
    source, clock = FakeSource("old"), Clock()
    check = verifier(source, clock)
    assert check.verify("old")

    source.versions["AWSCURRENT"] = SecretVersion("new", None)
    clock.now += 16
    assert check.verify("new")  # a miss after the minimum interval refreshes
    fetched = len(source.fetches)
    for _ in range(1000):
        assert not check.verify("wrong")
    assert len(source.fetches) == fetched  # within the interval: no more fetches


def test_missing_keys_never_fetch() -> None:
    source, clock = FakeSource("k1"), Clock()
    check = verifier(source, clock)
    assert not check.verify(None)
    assert not check.verify("")
    assert source.fetches == []


def test_no_obtainable_key_fails_closed_with_a_transient_error() -> None:
    source, clock = FakeSource("k1"), Clock()
    source.failure = DependencyFailure("secretsmanager", "ThrottlingException", transient=True)
    check = verifier(source, clock)
    with pytest.raises(DependencyFailure):
        check.verify("k1")


def test_a_failed_refresh_keeps_the_cached_key_only_until_it_is_too_stale() -> None:
    source, clock = FakeSource("k1"), Clock()
    check = verifier(source, clock, cache_seconds=60, max_stale_seconds=600)
    assert check.verify("k1")
    source.failure = DependencyFailure("secretsmanager", "InternalError", transient=True)

    clock.now += 120
    assert check.verify("k1")
    clock.now += 600
    with pytest.raises(DependencyFailure):
        check.verify("k1")


def test_the_previous_key_is_accepted_only_during_the_grace_period() -> None:
    source, clock = FakeSource("new", created=datetime.now(UTC) - timedelta(minutes=5)), Clock()
    source.versions["AWSPREVIOUS"] = SecretVersion("old", None)
    assert verifier(source, clock).verify("old")

    expired = FakeSource("new", created=datetime.now(UTC) - timedelta(hours=2))
    expired.versions["AWSPREVIOUS"] = SecretVersion("old", None)
    assert not verifier(expired, Clock()).verify("old")
    assert "AWSPREVIOUS" not in expired.fetches


def test_secrets_manager_unavailable_on_a_cold_start_is_503(
    stack: Stack, aws_calls: AwsCallCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(stack)
    service = build_service(RouteSettings.from_environment(stack.function_environment()))
    client = TestClient(create_app(service))
    source = service.verifier._source

    def unavailable(stage: str) -> SecretVersion:
        raise DependencyFailure("secretsmanager", "ServiceUnavailable", transient=True)

    monkeypatch.setattr(source, "fetch", unavailable)
    response = client.post(
        "/api/conversations/demo-running/stop", headers={"X-Session-API-Key": "whatever"}
    )

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert json.loads(response.text)["message"] == "Failed to stop conversation"
    assert aws_calls.of("dynamodb") == 0


@pytest.mark.parametrize("secret_string", ["caf\u00e9-session-key", "key with spaces inside"])
def test_an_invalid_key_is_refused_with_a_reason_that_does_not_carry_it(
    secret_string: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A key no client could present as stored fails closed, and says why."""
    with mock_aws():
        _, client = app_for_secret(secret_string)
        # The UTF-8 bytes of the stored key, as a client would send them; and another key.
        for presented in ("caf\u00e9-session-key".encode(), b"key"):
            response = client.post(
                "/api/conversations/demo-running/stop",
                headers={"X-Session-API-Key": presented},
            )
            assert response.status_code == 401
    refusals = [r for r in caplog.records if "not visible ASCII" in r.getMessage()]
    assert refusals
    assert all(r.levelname == "ERROR" for r in refusals)
    assert secret_string not in caplog.text
    assert "caf" not in caplog.text
