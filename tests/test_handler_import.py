"""The handler template.yaml names imports as Lambda imports it, and fails closed on bad config."""

from __future__ import annotations

import subprocess

from local.emulation import OFFLINE_FUNCTION_ENV
from tests.support import run_beside_handler


def import_handler(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter, only the CodeUri and the layer on the path, as on Lambda."""
    return run_beside_handler("import app; print(type(app.handler).__name__)", function_env=env)


FULL = {
    **OFFLINE_FUNCTION_ENV,
    "CANCEL_QUEUE_URL": "http://127.0.0.1:1/123456789012/cancel.fifo",
}


def test_the_handler_imports_with_the_templates_variables_and_no_network() -> None:
    # The endpoint is a closed port: an import that touched the network would fail or hang.
    result = import_handler({**FULL, "AWS_ENDPOINT_URL": "http://127.0.0.1:1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "function"


def test_a_missing_setting_fails_the_import_loudly() -> None:
    partial = {k: v for k, v in FULL.items() if k != "SESSION_API_KEY_SECRET_ID"}
    result = import_handler(partial)
    assert result.returncode != 0
    assert "SESSION_API_KEY_SECRET_ID" in result.stderr
