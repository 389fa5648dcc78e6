"""make rotate-key: a key the route could never accept is refused before it is stored, and an
emergency rotation leaves the replaced key no grace."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator

import pytest
from moto import mock_aws
from openhands_stop.aws.session_key import key_from_secret_string
from openhands_stop.edge.settings import RouteSettings
from openhands_stop.wiring import build_service

from local.emulation import DEMO_SESSION_KEY, Stack, create_stack
from scripts.rotate_session_key import InvalidKey, check_key, generate_key, main, rotate


@pytest.fixture
def stack() -> Iterator[Stack]:
    with mock_aws():
        yield create_stack(None, suffix=f"-{uuid.uuid4().hex[:8]}")


def current_key(stack: Stack) -> str | None:
    value = stack.client("secretsmanager").get_secret_value(SecretId=stack.secret_id)
    return key_from_secret_string(value["SecretString"])


@pytest.mark.parametrize(
    "key",
    [
        "caf\u00e9" * 10,  # non-ASCII: a header could never carry it as stored
        "a key with spaces in it, long enough otherwise",
        "tab\tinside-" + "x" * 30,
        "short",
        "x" * 513,
    ],
    ids=["non-ascii", "spaces", "tab", "too-short", "too-long"],
)
def test_a_key_the_route_would_refuse_is_refused_and_the_secret_is_unchanged(
    stack: Stack, key: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidKey) as refused:
        check_key(key)
    assert key not in str(refused.value)
    monkeypatch.setattr("sys.stdin", io.StringIO(key + "\n"))
    assert main(["--secret-id", stack.secret_id, "--key-stdin"]) == 2
    assert current_key(stack) == DEMO_SESSION_KEY
    out, err = capsys.readouterr()
    assert "refused" in err
    assert key.strip() not in out + err


def test_a_generated_key_is_one_the_route_accepts(stack: Stack) -> None:
    for _ in range(50):
        assert check_key(generate_key())
    result = rotate(stack.client("secretsmanager"), stack.secret_id)
    new_key = current_key(stack)
    assert new_key not in {None, DEMO_SESSION_KEY}
    assert new_key not in json.dumps(result)
    verifier = build_service(RouteSettings.from_environment(stack.function_environment())).verifier
    assert verifier.verify(new_key)


def test_a_rotation_keeps_the_old_key_for_the_grace_period_and_a_revocation_does_not(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = stack.client("secretsmanager")
    settings = RouteSettings.from_environment(stack.function_environment())

    rotate(secrets, stack.secret_id, "n" * 40)
    fresh = build_service(settings).verifier
    assert fresh.verify("n" * 40)
    assert fresh.verify(DEMO_SESSION_KEY), "the replaced key is in its grace period"

    result = rotate(secrets, stack.secret_id, "r" * 40, revoke_previous=True)
    assert result["revoked_version_id"]
    fresh = build_service(settings).verifier
    assert fresh.verify("r" * 40)
    assert not fresh.verify("n" * 40), "revoked: no AWSPREVIOUS, so no grace"
    assert not fresh.verify(DEMO_SESSION_KEY)


def test_the_cli_prints_the_version_never_the_key(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("k" * 40 + "\n"))
    assert main(["--secret-id", stack.secret_id, "--key-stdin", "--revoke-previous"]) == 0
    out, err = capsys.readouterr()
    assert "k" * 40 not in out + err
    assert json.loads(out)["version_id"]
    assert current_key(stack) == "k" * 40
