"""samconfig.toml: a dev and a prod deploy configuration that the template accepts."""

from __future__ import annotations

import shlex
import tomllib
from typing import Any

import pytest

from tests.template.support import ROOT, rule_failures

CONFIG = tomllib.loads((ROOT / "samconfig.toml").read_text())
# The worker queues' names are `${AWS::StackName}_cancel-worker-<12>.fifo`: SQS allows 80.
MAX_STACK_NAME = 80 - len("_cancel-worker-") - 12 - len(".fifo")


def overrides(environment: str) -> dict[str, str]:
    text = CONFIG[environment]["deploy"]["parameters"]["parameter_overrides"]
    return dict(pair.split("=", 1) for pair in shlex.split(text))


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_each_environment_deploys_its_own_stack_with_iam_capability(environment: str) -> None:
    deploy = CONFIG[environment]["deploy"]["parameters"]
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert deploy["resolve_s3"] is True
    assert len(deploy["stack_name"]) <= MAX_STACK_NAME
    assert f"environment={environment}" in deploy["tags"].split()
    assert overrides(environment)["Environment"] == environment
    assert "disable_rollback" not in deploy


def test_the_stacks_are_distinct() -> None:
    names = {CONFIG[env]["deploy"]["parameters"]["stack_name"] for env in ("dev", "prod")}
    assert len(names) == 2


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_every_override_is_a_parameter_of_the_template(
    transformed: dict[str, Any], environment: str
) -> None:
    assert set(overrides(environment)) <= set(transformed["Parameters"])


def test_prod_as_committed_is_refused_until_an_alarm_destination_and_workers_are_set(
    transformed: dict[str, Any],
) -> None:
    prod = overrides("prod")
    topic = {"AlarmTopicArn": "arn:aws:sns:us-east-1:111122223333:oncall"}
    workers = {"WorkerRoleArns": "arn:aws:iam::111122223333:role/agent-worker"}
    assert len(rule_failures(transformed, prod)) == 2, "neither: the deploy must be refused"
    assert rule_failures(transformed, {**prod, **topic}), "no workers: refused"
    assert rule_failures(transformed, {**prod, **workers}), "no destination: refused"
    assert not rule_failures(transformed, {**prod, **topic, **workers})
    assert prod["TableDeletionProtection"] == "true"
    assert CONFIG["prod"]["deploy"]["parameters"]["confirm_changeset"] is True


def test_dev_deploys_without_an_alarm_destination(transformed: dict[str, Any]) -> None:
    assert not rule_failures(transformed, overrides("dev"))


def test_prod_deploys_as_a_canary_and_dev_all_at_once(transformed: dict[str, Any]) -> None:
    """Both go through CodeDeploy (the pre-traffic hook runs for each); prod shifts 10% of
    stops first, long enough for the error and dependency alarms to roll it back."""
    assert overrides("dev")["DeploymentStrategy"] == "AllAtOnce"
    assert overrides("prod")["DeploymentStrategy"] == "Canary10Percent10Minutes"
    allowed = transformed["Parameters"]["DeploymentStrategy"]["AllowedValues"]
    assert {"AllAtOnce", "Canary10Percent10Minutes"} <= set(allowed)
