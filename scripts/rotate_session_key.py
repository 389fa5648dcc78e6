"""Rotate the stop route's session key: refuse a key the route could never accept, and
optionally revoke the previous key at once (a leaked key).

    make rotate-key SECRET_ID=<SessionApiKeySecretArn>            # a generated key
    make rotate-key SECRET_ID=<arn> REVOKE=1                     # and revoke the old one
    .venv/bin/python -m scripts.rotate_session_key --secret-id <arn> --key-stdin < key.txt

The new key becomes AWSCURRENT; the key it replaces becomes AWSPREVIOUS and is still
accepted for PreviousKeyGraceSeconds, unless ``--revoke-previous`` takes the AWSPREVIOUS
label off it. Nothing printed or logged ever contains a key: read the new one with
``aws secretsmanager get-secret-value``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from typing import TYPE_CHECKING, Any

import boto3
from openhands_stop.aws.session_key import VALID_KEY_CHARACTERS, is_valid_session_key

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

MIN_KEY_LENGTH = 32
MAX_KEY_LENGTH = 512
"""Long enough not to be guessed; short enough for any proxy's header limits."""


class InvalidKey(ValueError):
    """The key would be refused by the route, or is too weak to use."""


def check_key(key: str) -> str:
    """The key, if the route accepts it as it is stored; never echoes it in the error."""
    if not is_valid_session_key(key):
        raise InvalidKey(f"a session key is {VALID_KEY_CHARACTERS}")
    if not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH:
        raise InvalidKey(f"a session key has {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} characters")
    return key


def generate_key() -> str:
    """48 characters of A-Z a-z 0-9 - _ (288 random bits)."""
    return secrets.token_urlsafe(36)


def rotate(
    client: SecretsManagerClient,
    secret_id: str,
    key: str | None = None,
    *,
    revoke_previous: bool = False,
) -> dict[str, Any]:
    """Make ``key`` (or a generated one) AWSCURRENT; with ``revoke_previous`` no version is
    left AWSPREVIOUS, so the replaced key is refused as soon as instances re-read the secret."""
    new_key = check_key(key) if key is not None else generate_key()
    version_id = client.put_secret_value(SecretId=secret_id, SecretString=new_key)["VersionId"]
    revoked = None
    if revoke_previous:
        revoked = _previous_version(client, secret_id)
        if revoked is not None:
            client.update_secret_version_stage(
                SecretId=secret_id, VersionStage="AWSPREVIOUS", RemoveFromVersionId=revoked
            )
    return {"secret_id": secret_id, "version_id": version_id, "revoked_version_id": revoked}


def _previous_version(client: SecretsManagerClient, secret_id: str) -> str | None:
    stages = client.describe_secret(SecretId=secret_id).get("VersionIdsToStages", {})
    return next((version for version, on in stages.items() if "AWSPREVIOUS" in on), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secret-id", required=True, help="SessionApiKeySecretArn")
    parser.add_argument(
        "--key-stdin", action="store_true", help="read the new key from stdin (else generate)"
    )
    parser.add_argument(
        "--revoke-previous",
        action="store_true",
        help="no instance accepts the replaced key as the previous one (a warm instance that "
        "cached it as the current one keeps it up to KEY_CACHE_SECONDS)",
    )
    args = parser.parse_args(argv)
    key = sys.stdin.readline().strip() if args.key_stdin else None
    try:
        result = rotate(
            boto3.client("secretsmanager"),
            args.secret_id,
            key,
            revoke_previous=args.revoke_previous,
        )
    except InvalidKey as refused:
        print(f"refused, the secret is unchanged: {refused}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
