"""checkov on the template as CloudFormation receives it: nothing fails, and every check the
stack does not meet is skipped in template.yaml's Metadata with its reason."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.template.support import ROOT, offline_env

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
CHECKOV_OPTIONS = ("--framework", "cloudformation", "--skip-download")  # as `make lint` runs it

DELIBERATE = {
    ("CKV_AWS_26", "AWS::SNS::Topic.AlarmTopic"),
    ("CKV_AWS_158", "AWS::Logs::LogGroup.FunctionLogGroup"),
    ("CKV_AWS_158", "AWS::Logs::LogGroup.ApiAccessLogGroup"),
    ("CKV_AWS_27", "AWS::SQS::Queue.CancelQueue"),
    ("CKV_AWS_27", "AWS::SQS::Queue.CancelDeadLetterQueue"),
    ("CKV_AWS_119", "AWS::DynamoDB::Table.ConversationsTable"),
    ("CKV_AWS_149", "AWS::SecretsManager::Secret.SessionApiKeySecret"),
    ("CKV_AWS_116", "AWS::Lambda::Function.StopConversationFunction"),
    ("CKV_AWS_117", "AWS::Lambda::Function.StopConversationFunction"),
    ("CKV_AWS_173", "AWS::Lambda::Function.StopConversationFunction"),
    # The pre-traffic hook (CodeDeploy invokes it once per deployment) and its logs.
    ("CKV_AWS_115", "AWS::Lambda::Function.PreTrafficHookFunction"),
    ("CKV_AWS_116", "AWS::Lambda::Function.PreTrafficHookFunction"),
    ("CKV_AWS_117", "AWS::Lambda::Function.PreTrafficHookFunction"),
    ("CKV_AWS_173", "AWS::Lambda::Function.PreTrafficHookFunction"),
    ("CKV_AWS_158", "AWS::Logs::LogGroup.PreTrafficHookLogGroup"),
}


@pytest.fixture(scope="module")
def report(transformed: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not CHECKOV.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHECKOV} is missing: `make test` installs it (make checkov-install)")
        pytest.skip(f"{CHECKOV} is missing: run `make checkov-install`")
    path = tmp_path_factory.mktemp("checkov") / "transformed.json"
    path.write_text(json.dumps(transformed))
    result = subprocess.run(
        [str(CHECKOV), "--file", str(path), *CHECKOV_OPTIONS, "--output", "json"],
        capture_output=True,
        text=True,
        env=offline_env(),
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return json.loads(result.stdout)


def test_no_check_fails(report: Any) -> None:
    assert report["summary"]["failed"] == 0
    assert report["summary"]["passed"] > 0


def test_every_skipped_check_is_a_recorded_choice_with_its_reason(report: Any) -> None:
    skipped = report["results"]["skipped_checks"]
    assert {(c["check_id"], c["resource"]) for c in skipped} == DELIBERATE
    for check in skipped:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason) > 60, (check["check_id"], check["resource"], reason)


def test_the_skips_live_in_the_template_itself() -> None:
    template = Path(ROOT / "template.yaml").read_text()
    for check_id, _ in DELIBERATE:
        assert f"- id: {check_id}" in template
