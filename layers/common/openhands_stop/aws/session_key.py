"""The session key in Secrets Manager: what the stop route compares ``X-Session-API-Key`` to."""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING

from openhands_stop.aws.failures import dependency_call
from openhands_stop.domain.ports import SecretVersion

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

ABSENT = SecretVersion(key=None, created_at=None)

LOG = logging.getLogger(__name__)

VALID_KEY_CHARACTERS = "visible ASCII (! to ~, no spaces)"
_VALID_KEY = re.compile(r"[\x21-\x7e]+")
"""A session key is one or more visible ASCII characters. An HTTP header carries those
byte for byte; anything else (spaces, which proxies trim; non-ASCII, which Starlette decodes
as latin-1 while the digest is of UTF-8) could never be presented as it is stored."""


def is_valid_session_key(key: str) -> bool:
    return _VALID_KEY.fullmatch(key) is not None


def key_from_secret_string(secret_string: str | None) -> str | None:
    """The session key held in a SecretString: the string itself, or its ``session_api_key``,
    either one without surrounding whitespace.

    Blank, JSON without a usable ``session_api_key``, or a key that is not visible ASCII
    means no key: every request is refused.
    """
    if not secret_string or not secret_string.strip():
        return None
    text = secret_string.strip()
    key: object = text
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        else:
            key = document.get("session_api_key") if isinstance(document, dict) else None
    if not isinstance(key, str) or not key.strip():
        return None
    key = key.strip()
    if not is_valid_session_key(key):
        # Never the key itself: only that it cannot be used, and what a valid one is.
        LOG.error("the session key is not %s: it is refused", VALID_KEY_CHARACTERS)
        return None
    return key


class SecretsManagerKeySource:
    """``KeySource`` (domain.ports) on Secrets Manager: one ``GetSecretValue`` per fetch."""

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
