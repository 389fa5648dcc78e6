"""The template transformed once per session by samtranslator, in aws-sam-cli's own venv."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
SAM_VENV = ROOT / ".venv-sam"
# Offline: a region and dummy credentials; nothing may reach a real account.
OFFLINE_AWS = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "offline",
    "AWS_SECRET_ACCESS_KEY": "offline",
    "AWS_EC2_METADATA_DISABLED": "true",
    "SAM_CLI_TELEMETRY": "0",
}


def offline_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAM_CLI"))}
    return {**env, **OFFLINE_AWS}


def sam_tool(name: str) -> Path:
    """A tool from .venv-sam (make sam-install); missing, the tests skip, except in CI."""
    tool = SAM_VENV / "bin" / name
    if not tool.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is missing: `make test` installs it (make sam-install)")
        pytest.skip(f"{tool} is missing: run `make sam-install`")
    return tool


def transform(
    parameters: dict[str, str] | None = None, code: dict[str, str] | None = None
) -> dict[str, Any]:
    """template.yaml after the SAM transform, as CloudFormation receives it with these
    parameter values; ``code`` gives resources' uploaded artifact URIs (a rebuilt layer
    is uploaded under a new key)."""
    args = [f"{name}={value}" for name, value in (parameters or {}).items()]
    for name, uri in (code or {}).items():
        args += ["--code", f"{name}={uri}"]
    result = subprocess.run(
        [str(sam_tool("python")), str(ROOT / "tests/template/transform.py"), str(TEMPLATE), *args],
        capture_output=True,
        text=True,
        env=offline_env(),
        check=True,
        timeout=120,
    )
    template: dict[str, Any] = json.loads(result.stdout)
    return template


@pytest.fixture(scope="session")
def transformed() -> dict[str, Any]:
    """template.yaml as CloudFormation receives it after the SAM transform."""
    return transform()
