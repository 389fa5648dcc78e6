"""The session key in Secrets Manager: what the stop route compares ``X-Session-API-Key`` to."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from openhands_stop.aws.failures import dependency_call

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


@dataclass(frozen=True)
class SecretVersion:
    """One stage of the secret: its key (``None`` when empty or absent) and when it was made."""

    key: str | None
    created_at: datetime | None


ABSENT = SecretVersion(key=None, created_at=None)


def key_from_secret_string(secret_string: str | None) -> str | None:
    """The session key held in a SecretString: the string itself, or its ``session_api_key``.

    Blank, or JSON without a usable ``session_api_key``, means no key: every request is refused.
    """
    if not secret_string or not secret_string.strip():
        return None
    text = secret_string.strip()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            return text
        key = document.get("session_api_key") if isinstance(document, dict) else None
        return key if isinstance(key, str) and key.strip() else None
    return text


class SecretsManagerKeySource:
    """Fetches one stage (``AWSCURRENT``, ``AWSPREVIOUS``) of the session-key secret."""

    def __init__(self, client: SecretsManagerClient, secret_id: str) -> None:
        self._client = client
        self._secret_id = secret_id

    def fetch(self, stage: str) -> SecretVersion:
        with dependency_call("secretsmanager"):
            try:
                response = self._client.get_secret_value(
                    SecretId=self._secret_id, VersionStage=stage
                )
            except self._client.exceptions.ResourceNotFoundException:
                # Deleted secret, or no version in that stage: no key, so nothing passes.
                return ABSENT
        return SecretVersion(
            key=key_from_secret_string(response.get("SecretString")),
            created_at=response.get("CreatedDate"),
        )
