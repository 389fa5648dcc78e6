"""Helpers for the template tests: paths, aws-sam-cli's venv (offline), the SAM transform,
and reading resources and rules out of a transformed template."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.template.cfn import Evaluator

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
    parameters: dict[str, str] | None = None,
    code: dict[str, str] | None = None,
    template: Path = TEMPLATE,
) -> dict[str, Any]:
    """template.yaml (or ``template``, an edited copy) after the SAM transform, as
    CloudFormation receives it with these parameter values; ``code`` gives resources'
    uploaded artifact URIs (a rebuilt layer is uploaded under a new key)."""
    args = [f"{name}={value}" for name, value in (parameters or {}).items()]
    for name, uri in (code or {}).items():
        args += ["--code", f"{name}={uri}"]
    result = subprocess.run(
        [str(sam_tool("python")), str(ROOT / "tests/template/transform.py"), str(template), *args],
        capture_output=True,
        text=True,
        env=offline_env(),
        check=True,
        timeout=120,
    )
    transformed: dict[str, Any] = json.loads(result.stdout)
    return transformed


def resources_of(deployed: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: body["Properties"]
        for name, body in deployed["Resources"].items()
        if body["Type"] == kind
    }


def one(deployed: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    found = resources_of(deployed, kind)
    assert len(found) == 1, (kind, sorted(found))
    ((name, properties),) = found.items()
    return name, properties


def stop_function(deployed: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The stop function (the other function is CodeDeploy's pre-traffic hook)."""
    functions = resources_of(deployed, "AWS::Lambda::Function")
    assert set(functions) == {"StopConversationFunction", "PreTrafficHookFunction"}, functions
    return "StopConversationFunction", functions["StopConversationFunction"]


def function_role_statements(
    deployed: dict[str, Any], function_name: str = "StopConversationFunction"
) -> dict[str, dict[str, Any]]:
    function = resources_of(deployed, "AWS::Lambda::Function")[function_name]
    role_name = function["Role"].removeprefix("${").removesuffix(".Arn}")
    role = deployed["Resources"][role_name]["Properties"]
    (policy,) = role["Policies"]
    found = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert len(found) == len(policy["PolicyDocument"]["Statement"]), "Sids are unique"
    return found


def rule_failures(transformed: dict[str, Any], parameters: dict[str, str]) -> list[str]:
    """The rules' assertions CloudFormation would refuse the deploy with, for these values."""
    evaluator = Evaluator(transformed, parameters)
    failed = []
    for rule in transformed.get("Rules", {}).values():
        if "RuleCondition" in rule and not evaluator.resolve(rule["RuleCondition"]):
            continue
        for assertion in rule["Assertions"]:
            if not evaluator.resolve(assertion["Assert"]):
                failed.append(assertion["AssertDescription"])
    return failed
