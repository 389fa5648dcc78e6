"""The handler template.yaml names imports as Lambda imports it, and fails closed on bad config."""

from __future__ import annotations

import subprocess
import sys

from local.emulation import FUNCTION_DIR, ROOT


def import_handler(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter, only the CodeUri and the layer on the path, as on Lambda."""
    code = "import app; print(type(app.handler).__name__)"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=FUNCTION_DIR,
        env={
            "PYTHONPATH": f"{FUNCTION_DIR}:{ROOT / 'layers' / 'common'}",
            "AWS_DEFAULT_REGION": "us-east-1",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


FULL = {
    "CONVERSATIONS_TABLE_NAME": "conversations",
    "CANCEL_QUEUE_URL": "http://127.0.0.1:1/123456789012/cancel.fifo",
    "SESSION_API_KEY_SECRET_ID": "stop-conversation/session-api-key",
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
