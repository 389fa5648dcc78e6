"""What a platform team signs off: alarms that reach someone, production defaults, tags on
every resource, an optional permissions boundary, and deliberate deletion policies."""

from __future__ import annotations

from typing import Any

import pytest
from openhands_stop.edge import observability

from tests.template.cfn import evaluate
from tests.template.support import ROOT, resources_of, rule_failures, stop_function

WORKERS = {"WorkerRoleArns": "arn:aws:iam::111122223333:role/agent-worker"}
EMAIL = {"AlarmEmail": "ops@example.com", **WORKERS}


def alarms_by_metric(deployed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The alarms on one metric, by metric (the client-error alarm is metric math)."""
    alarms = resources_of(deployed, "AWS::CloudWatch::Alarm")
    single = [alarm for alarm in alarms.values() if "Metrics" not in alarm]
    by_metric = {alarm["MetricName"]: alarm for alarm in single}
    assert len(by_metric) == len(single), "one alarm per metric"
    return by_metric


# -- alarm destinations -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "refused"),
    [
        ({"Environment": "prod", **WORKERS}, True),
        ({"Environment": "prod", **EMAIL}, False),
        (
            {
                "Environment": "prod",
                "AlarmTopicArn": "arn:aws:sns:us-east-1:111122223333:ops",
                **WORKERS,
            },
            False,
        ),
        ({"Environment": "dev"}, False),
        ({}, False),
    ],
    ids=["prod-without", "prod-email", "prod-topic", "dev-without", "default"],
)
def test_production_refuses_to_deploy_without_an_alarm_destination(
    transformed: dict[str, Any], parameters: dict[str, str], refused: bool
) -> None:
    failures = rule_failures(transformed, parameters)
    assert bool(failures) is refused, failures
    if refused:
        assert "AlarmEmail or AlarmTopicArn" in failures[0]


@pytest.mark.parametrize(
    ("workers", "refused"),
    [
        ("", True),
        ("arn:aws:iam::111122223333:role/a,", True),  # an empty item names nobody
        ("arn:aws:iam::111122223333:role/a", False),
        ("arn:aws:iam::111122223333:role/a,arn:aws:iam::111122223333:role/b", False),
    ],
)
def test_production_refuses_to_deploy_without_worker_roles(
    transformed: dict[str, Any], workers: str, refused: bool
) -> None:
    """Without WorkerRoleArns any principal whose IAM allows it may take cancels: prod
    names its workers (dev may leave it to IAM)."""
    failures = rule_failures(
        transformed,
        {"Environment": "prod", "AlarmEmail": "ops@example.com", "WorkerRoleArns": workers},
    )
    assert bool(failures) is refused, failures
    if refused:
        assert "WorkerRoleArns" in failures[0]
    assert not rule_failures(transformed, {"Environment": "dev", "WorkerRoleArns": ""})


def test_every_alarm_notifies_the_destination_on_alarm_and_on_recovery(
    transformed: dict[str, Any],
) -> None:
    deployed = evaluate(transformed, {"Environment": "prod", **EMAIL})
    for name, alarm in resources_of(deployed, "AWS::CloudWatch::Alarm").items():
        assert alarm["AlarmActions"] == ["${AlarmTopic}"], name
        assert alarm["OKActions"] == ["${AlarmTopic}"], name


# -- the alarms the issue asks for ---------------------------------------------------------


def test_p99_latency_alarms_watch_the_function_and_the_api(transformed: dict[str, Any]) -> None:
    deployed = evaluate(transformed, {"LatencyAlarmMilliseconds": "2500"})
    alarms = alarms_by_metric(deployed)
    function_name = stop_function(deployed)[0]
    duration, latency = alarms["Duration"], alarms["Latency"]
    assert duration["Namespace"] == "AWS/Lambda"
    assert duration["Dimensions"] == [{"Name": "FunctionName", "Value": "${" + function_name + "}"}]
    assert latency["Namespace"] == "AWS/ApiGateway"
    assert latency["Dimensions"] == [{"Name": "ApiId", "Value": "${StopApi}"}]
    for alarm in (duration, latency):
        assert alarm["ExtendedStatistic"] == "p99"
        assert "Statistic" not in alarm
        assert alarm["Threshold"] == "2500"
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
        # Sustained: every period of the window breaches, so one cold start never pages.
        assert alarm["DatapointsToAlarm"] == alarm["EvaluationPeriods"] >= 2


def test_the_function_s_own_metrics_are_alarmed_where_it_publishes_them(
    transformed: dict[str, Any],
) -> None:
    """Namespace and dimension as the function's EMF line writes them."""
    deployed = evaluate(
        transformed, {"MetricsNamespace": "Team/Stops", "UnauthorizedAlarmPerMinute": "120"}
    )
    env = stop_function(deployed)[1]["Environment"]["Variables"]
    alarms = alarms_by_metric(deployed)
    for metric in ("DependencyFailure", "Unauthorized"):
        alarm = alarms[metric]
        assert alarm["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"] == "Team/Stops"
        assert alarm["Dimensions"] == [{"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}]
        assert alarm["Statistic"] == "Sum"
    assert alarms["DependencyFailure"]["Threshold"] == 1
    assert alarms["Unauthorized"]["Threshold"] == "120"
    assert alarms["Unauthorized"]["ComparisonOperator"] == "GreaterThanThreshold"


def test_the_emf_names_are_the_ones_the_alarms_use() -> None:
    metrics = (observability.Metric.UNAUTHORIZED, observability.Metric.DEPENDENCY_FAILURE)
    [directive] = observability._directive("Team/Stops", metrics)
    assert directive["Dimensions"] == [["service"]]
    assert [m["Name"] for m in directive["Metrics"]] == ["Unauthorized", "DependencyFailure"]  # type: ignore[attr-defined]


def test_the_cancel_queue_s_oldest_message_age_is_alarmed(transformed: dict[str, Any]) -> None:
    deployed = evaluate(transformed, {"QueueAgeAlarmSeconds": "600"})
    alarm = alarms_by_metric(deployed)["ApproximateAgeOfOldestMessage"]
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": "${CancelQueue.QueueName}"}]
    assert alarm["Statistic"] == "Maximum"
    assert alarm["Threshold"] == "600"


# -- production defaults ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "reserved"),
    [
        ({}, None),
        ({"Environment": "prod", **EMAIL}, 50),
        ({"Environment": "prod", "ReservedConcurrency": "50", **EMAIL}, "50"),
        ({"Environment": "prod", "ReservedConcurrency": "0", **EMAIL}, "0"),
        ({"ReservedConcurrency": "5"}, "5"),
    ],
    ids=["dev", "prod-default", "prod-chosen", "prod-off", "dev-chosen"],
)
def test_production_reserves_concurrency_by_default(
    transformed: dict[str, Any], parameters: dict[str, str], reserved: Any
) -> None:
    function = stop_function(evaluate(transformed, parameters))[1]
    assert function.get("ReservedConcurrentExecutions") == reserved


# -- governance ------------------------------------------------------------------------------

UNTAGGABLE = {
    # SAM generates the CodeDeploy application and group without tags (the stack's tags,
    # samconfig.toml's `tags`, still reach them); the rest take none.
    "AWS::CodeDeploy::Application",
    "AWS::CodeDeploy::DeploymentGroup",
    "AWS::CloudWatch::Dashboard",
    "AWS::WAFv2::WebACLAssociation",
    "AWS::ApiGateway::Deployment",
    "AWS::Lambda::LayerVersion",
    "AWS::Lambda::Version",
    "AWS::Lambda::Alias",
    "AWS::Lambda::Permission",
    "AWS::SQS::QueuePolicy",
    "AWS::IAM::ManagedPolicy",
    "AWS::ApiGatewayV2::Integration",
    "AWS::ApiGatewayV2::Route",
}


def _tags(properties: dict[str, Any]) -> dict[str, str]:
    tags = properties.get("Tags", {})
    if isinstance(tags, list):
        return {tag["Key"]: tag["Value"] for tag in tags}
    return dict(tags)


@pytest.mark.parametrize("kind", ["http", "rest"])
def test_every_taggable_resource_is_tagged_with_application_and_environment(
    transformed: dict[str, Any], kind: str
) -> None:
    deployed = evaluate(transformed, {"Environment": "prod", "ApiKind": kind, **EMAIL})
    resources = deployed["Resources"]
    assert {body["Type"] for body in resources.values()} >= {"AWS::CloudWatch::Alarm"}
    for name, body in resources.items():
        if body["Type"] in UNTAGGABLE:
            continue
        tags = _tags(body["Properties"])
        assert tags.get("application") == "openhands-stop", name
        assert tags.get("environment") == "prod", name


def test_the_permissions_boundary_is_optional_and_applies_to_the_role(
    transformed: dict[str, Any],
) -> None:
    roles = resources_of(evaluate(transformed), "AWS::IAM::Role")
    assert set(roles) == {"StopConversationRole", "PreTrafficHookRole", "DeploymentRole"}
    assert not [name for name, role in roles.items() if "PermissionsBoundary" in role]
    boundary = "arn:aws:iam::111122223333:policy/org-boundary"
    deployed = evaluate(transformed, {"PermissionsBoundaryArn": boundary})
    for role in resources_of(deployed, "AWS::IAM::Role").values():
        assert role["PermissionsBoundary"] == boundary


STATEFUL = {
    # resource: (DeletionPolicy, UpdateReplacePolicy)
    "ConversationsTable": ("Delete", "Retain"),  # deletion protection guards deletion
    "SessionApiKeySecret": ("Delete", "Retain"),
    "CancelQueue": ("Delete", "Delete"),
    "CancelDeadLetterQueue": ("Delete", "Delete"),
    "FunctionLogGroup": ("Retain", "Retain"),
    "ApiAccessLogGroup": ("Retain", "Retain"),
    "PreTrafficHookLogGroup": ("Delete", "Delete"),  # a deploy check's lines, not a record
}


def test_stateful_resources_have_explicit_deletion_and_replace_policies(
    transformed: dict[str, Any],
) -> None:
    resources = transformed["Resources"]
    for name, (deletion, replace) in STATEFUL.items():
        assert resources[name].get("DeletionPolicy") == deletion, name
        assert resources[name].get("UpdateReplacePolicy") == replace, name
    stateful_types = {
        "AWS::DynamoDB::Table",
        "AWS::SecretsManager::Secret",
        "AWS::SQS::Queue",
        "AWS::Logs::LogGroup",
        "AWS::SNS::Topic",
    }
    for name, body in resources.items():
        if body["Type"] in stateful_types:
            assert "DeletionPolicy" in body, name
            assert "UpdateReplacePolicy" in body, name


def test_every_alarm_has_a_runbook_entry(transformed: dict[str, Any]) -> None:
    """docs/operations.md: what it means, how to look, what to do, for each alarm."""
    guide = (ROOT / "docs" / "operations.md").read_text()
    runbook = guide.split("## Runbook: one entry per alarm", 1)[1]
    entries = {
        section.split("\n", 1)[0].strip(): section for section in runbook.split("\n### ")[1:]
    }
    alarms = {
        name
        for name, body in transformed["Resources"].items()
        if body["Type"] == "AWS::CloudWatch::Alarm"
    }
    assert set(entries) == alarms
    for name, entry in entries.items():
        for part in ("**Means**", "**Look**", "**Do**"):
            assert part in entry, (name, part)
