"""Deploys an operator trusts: CodeDeploy with rollback alarms and a pre-traffic hook, both
API kinds (HTTP, or REST behind AWS WAF), the client-error alarm, the dashboard, and the
queues' high-throughput FIFO."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.template.cfn import evaluate
from tests.template.support import function_role_statements, one, resources_of, transform

ROLLBACK_ALARMS = [
    "FunctionErrorsAlarm",
    "DependencyFailureAlarm",
    "Api5xxAlarm",
    "FunctionDurationP99Alarm",
    "ApiLatencyP99Alarm",
]
REST_DIMENSIONS = [
    {"Name": "ApiName", "Value": "${AWS::StackName}-stop-conversation"},
    {"Name": "Stage", "Value": "v1"},
]
HTTP_DIMENSIONS = [{"Name": "ApiId", "Value": "${StopApi}"}]


@pytest.fixture(scope="module")
def default(transformed: dict[str, Any]) -> Any:
    return evaluate(transformed)


@pytest.fixture(scope="module")
def rest(transformed: dict[str, Any]) -> Any:
    return evaluate(transformed, {"ApiKind": "rest"})


# -- gradual deploys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "config"),
    [
        ("AllAtOnce", "CodeDeployDefault.LambdaAllAtOnce"),
        ("Canary10Percent10Minutes", "CodeDeployDefault.LambdaCanary10Percent10Minutes"),
    ],
)
def test_codedeploy_shifts_live_as_the_strategy_says(strategy: str, config: str) -> None:
    """SAM resolves DeploymentStrategy at transform time, as CloudFormation runs it."""
    deployed = evaluate(
        transform({"DeploymentStrategy": strategy}), {"DeploymentStrategy": strategy}
    )
    _, group = one(deployed, "AWS::CodeDeploy::DeploymentGroup")
    assert group["DeploymentConfigName"] == config
    assert group["DeploymentStyle"] == {
        "DeploymentOption": "WITH_TRAFFIC_CONTROL",
        "DeploymentType": "BLUE_GREEN",
    }


def test_the_rollback_alarms_are_errors_dependency_failures_5xx_and_latency(default: Any) -> None:
    _, group = one(default, "AWS::CodeDeploy::DeploymentGroup")
    assert group["AlarmConfiguration"]["Enabled"] is True
    assert [a["Name"] for a in group["AlarmConfiguration"]["Alarms"]] == [
        "${" + name + "}" for name in ROLLBACK_ALARMS
    ]
    assert group["AutoRollbackConfiguration"] == {
        "Enabled": True,
        "Events": ["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM", "DEPLOYMENT_STOP_ON_REQUEST"],
    }
    alarms = resources_of(default, "AWS::CloudWatch::Alarm")
    # Errors and dependency failures fire within 2 of 5 minutes: inside a 10-minute canary.
    for name in ("FunctionErrorsAlarm", "DependencyFailureAlarm", "Api5xxAlarm"):
        assert alarms[name]["Period"] * alarms[name]["DatapointsToAlarm"] <= 120, name


def test_the_alias_shifts_only_after_the_pre_traffic_hook(default: Any) -> None:
    alias = next(
        body for body in default["Resources"].values() if body["Type"] == "AWS::Lambda::Alias"
    )
    update = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    assert update["BeforeAllowTrafficHook"] == "${PreTrafficHookFunction}"
    assert update["DeploymentGroupName"] == "${StopConversationFunctionDeploymentGroup}"
    hook = resources_of(default, "AWS::Lambda::Function")["PreTrafficHookFunction"]
    version = next(
        n for n, b in default["Resources"].items() if b["Type"] == "AWS::Lambda::Version"
    )
    assert hook["Environment"]["Variables"] == {
        "TARGET_VERSION_ARN": "${" + version + "}",
        "SESSION_API_KEY_SECRET_ID": "${SessionApiKeySecret}",
    }
    assert hook["Handler"] == "app.handler"
    assert "Layers" not in hook, "the runtime's boto3: the layer's botocore is cut down"


def test_the_hook_may_invoke_the_new_version_read_the_key_and_report_nothing_else(
    default: Any,
) -> None:
    version = next(
        n for n, b in default["Resources"].items() if b["Type"] == "AWS::Lambda::Version"
    )
    granted = {
        sid: (s["Action"], s["Resource"])
        for sid, s in function_role_statements(default, "PreTrafficHookFunction").items()
    }
    assert granted == {
        "WriteLogs": (
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            "${PreTrafficHookLogGroup.Arn}",
        ),
        "InvokeTheNewVersion": ("lambda:InvokeFunction", "${" + version + "}"),
        "ReadSessionKey": ("secretsmanager:GetSecretValue", "${SessionApiKeySecret}"),
        "ReportToCodeDeploy": (
            "codedeploy:PutLifecycleEventHookExecutionStatus",
            "arn:${AWS::Partition}:codedeploy:${AWS::Region}:${AWS::AccountId}:deploymentgroup:"
            "${ServerlessDeploymentApplication}/*",
        ),
    }


def test_codedeploy_s_role_is_the_stack_s_own_without_managed_policies(default: Any) -> None:
    """SAM's default role attaches AWSCodeDeployRoleForLambda (every function, every alarm)."""
    _, group = one(default, "AWS::CodeDeploy::DeploymentGroup")
    assert group["ServiceRoleArn"] == "${DeploymentRole.Arn}"
    role = resources_of(default, "AWS::IAM::Role")["DeploymentRole"]
    assert "ManagedPolicyArns" not in role
    principal = role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
    assert principal == {"Service": "codedeploy.amazonaws.com"}
    (policy,) = role["Policies"]
    granted = {
        s["Sid"]: (s["Action"], s["Resource"]) for s in policy["PolicyDocument"]["Statement"]
    }
    assert granted["ShiftLiveAlias"][1] == [
        "${StopConversationFunction.Arn}",
        "${StopConversationFunction.Arn}:live",
    ]
    assert granted["RunPreTrafficHook"] == (
        "lambda:InvokeFunction",
        "${PreTrafficHookFunction.Arn}",
    )
    assert granted["ReadRollbackAlarms"][1].endswith(":alarm:${AWS::StackName}-*")


# -- the two API kinds -----------------------------------------------------------------------


def test_http_is_the_default_kind_and_has_no_rest_or_waf(default: Any) -> None:
    kinds = {body["Type"] for body in default["Resources"].values()}
    assert "AWS::ApiGatewayV2::Api" in kinds
    assert not {t for t in kinds if t.startswith(("AWS::ApiGateway::", "AWS::WAFv2::"))}
    assert "WebAclArn" not in default["Outputs"]


def test_rest_is_a_regional_api_with_the_one_route_to_the_alias(rest: Any) -> None:
    kinds = {body["Type"] for body in rest["Resources"].values()}
    assert not {t for t in kinds if t.startswith("AWS::ApiGatewayV2::")}
    _, api = one(rest, "AWS::ApiGateway::RestApi")
    assert api["EndpointConfiguration"] == {"Types": ["REGIONAL"]}
    assert api["Name"] == "${AWS::StackName}-stop-conversation"
    (path,) = api["Body"]["paths"]
    assert path == "/api/conversations/{conversation_id}/stop"
    (method,) = api["Body"]["paths"][path]
    assert method == "post"
    integration = api["Body"]["paths"][path]["post"]["x-amazon-apigateway-integration"]
    assert integration["type"] == "aws_proxy"
    alias = next(n for n, b in rest["Resources"].items() if b["Type"] == "AWS::Lambda::Alias")
    assert integration["uri"].endswith("/functions/${" + alias + "}/invocations")
    _, permission = one(rest, "AWS::Lambda::Permission")
    assert permission["FunctionName"] == "${" + alias + "}"
    assert permission["SourceArn"].endswith("${StopRestApi}/*/POST/api/conversations/*/stop")
    assert rest["Outputs"]["StopUrl"]["Value"] == (
        "https://${StopRestApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"
        "/v1/api/conversations/{conversation_id}/stop"
    )


def test_the_rest_stage_throttles_logs_without_headers_and_never_caches(rest: Any) -> None:
    _, stage = one(rest, "AWS::ApiGateway::Stage")
    assert stage["StageName"] == "v1"
    assert stage["CacheClusterEnabled"] is False
    (settings,) = stage["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == "200"
    assert settings["ThrottlingBurstLimit"] == "400"
    assert settings["DataTraceEnabled"] is False, "a data trace logs the key's header"
    access = stage["AccessLogSetting"]
    assert access["DestinationArn"] == "${ApiAccessLogGroup.Arn}"
    assert json.loads(access["Format"])["status"] == "$context.status"
    assert "header" not in access["Format"].lower()


def test_waf_blocks_keyless_requests_rates_per_ip_and_uses_managed_rules(
    transformed: dict[str, Any],
) -> None:
    deployed = evaluate(transformed, {"ApiKind": "rest", "WafRateLimitPerIp": "5000"})
    _, acl = one(deployed, "AWS::WAFv2::WebACL")
    assert acl["Scope"] == "REGIONAL"
    assert acl["DefaultAction"] == {"Allow": {}}
    rules = {rule["Name"]: rule for rule in acl["Rules"]}
    assert [r["Name"] for r in sorted(acl["Rules"], key=lambda r: r["Priority"])] == [
        "RequireSessionKeyHeader",
        "RatePerSourceIp",
        "AmazonIpReputationList",
        "KnownBadInputs",
        "CommonRuleSet",
    ]
    header = rules["RequireSessionKeyHeader"]
    assert header["Action"] == {"Block": {}}
    size = header["Statement"]["NotStatement"]["Statement"]["SizeConstraintStatement"]
    assert size["FieldToMatch"] == {"SingleHeader": {"Name": "x-session-api-key"}}
    assert (size["ComparisonOperator"], size["Size"]) == ("GE", 1)
    rate = rules["RatePerSourceIp"]
    assert rate["Action"] == {"Block": {}}
    assert rate["Statement"]["RateBasedStatement"] == {
        "Limit": "5000",
        "EvaluationWindowSec": 300,
        "AggregateKeyType": "IP",
    }
    for name in ("AmazonIpReputationList", "KnownBadInputs", "CommonRuleSet"):
        statement = rules[name]["Statement"]["ManagedRuleGroupStatement"]
        assert statement["VendorName"] == "AWS"
        assert rules[name]["OverrideAction"] == {"None": {}}
    # No sampled requests anywhere: a sample shows the request's headers, the key among them.
    assert acl["VisibilityConfig"]["SampledRequestsEnabled"] is False
    assert all(r["VisibilityConfig"]["SampledRequestsEnabled"] is False for r in acl["Rules"])
    _, association = one(deployed, "AWS::WAFv2::WebACLAssociation")
    assert association["WebACLArn"] == "${StopWebAcl.Arn}"
    # The stage's Ref is its name (v1), and makes the association wait for the stage.
    assert association["ResourceArn"].endswith(
        "/restapis/${StopRestApi}/stages/${StopRestApiv1Stage}"
    )


def test_the_per_ip_limit_leaves_room_for_a_fleet_wide_stop_from_one_address(
    transformed: dict[str, Any],
) -> None:
    parameter = transformed["Parameters"]["WafRateLimitPerIp"]
    assert int(parameter["Default"]) >= 10_000  # one orchestrator stopping 10,000 agents


@pytest.mark.parametrize("kind", ["http", "rest"])
def test_api_alarms_watch_the_kind_deployed(transformed: dict[str, Any], kind: str) -> None:
    deployed = evaluate(transformed, {"ApiKind": kind})
    alarms = resources_of(deployed, "AWS::CloudWatch::Alarm")
    dimensions = REST_DIMENSIONS if kind == "rest" else HTTP_DIMENSIONS
    assert alarms["Api5xxAlarm"]["MetricName"] == ("5XXError" if kind == "rest" else "5xx")
    for name in ("Api5xxAlarm", "ApiLatencyP99Alarm"):
        assert alarms[name]["Dimensions"] == dimensions, name
    answered = _metric(alarms["ApiClientErrorAlarm"], "answered4xx")
    assert answered["MetricName"] == ("4XXError" if kind == "rest" else "4xx")
    assert answered["Dimensions"] == dimensions


def _metric(alarm: dict[str, Any], metric_id: str) -> dict[str, Any]:
    (query,) = [m for m in alarm["Metrics"] if m["Id"] == metric_id]
    metric: dict[str, Any] = query["MetricStat"]["Metric"]
    return metric


def test_the_client_error_alarm_is_4xx_less_refused_keys(transformed: dict[str, Any]) -> None:
    """429s (the throttle turning real stops away) without the 401s of a flood or a probe,
    which the Unauthorized alarm watches on its own."""
    deployed = evaluate(
        transformed, {"ClientErrorAlarmPerMinute": "25", "MetricsNamespace": "Team/Stops"}
    )
    alarm = resources_of(deployed, "AWS::CloudWatch::Alarm")["ApiClientErrorAlarm"]
    (returned,) = [m for m in alarm["Metrics"] if m.get("ReturnData")]
    assert returned["Expression"] == "FILL(answered4xx, 0) - FILL(unauthorized, 0)"
    unauthorized = _metric(alarm, "unauthorized")
    assert unauthorized["Namespace"] == "Team/Stops"
    assert unauthorized["MetricName"] == "Unauthorized"
    assert unauthorized["Dimensions"] == [{"Name": "service", "Value": "stop-conversation"}]
    assert alarm["Threshold"] == "25"
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert (alarm["DatapointsToAlarm"], alarm["EvaluationPeriods"]) == (3, 5)


# -- the dashboard ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["http", "rest"])
def test_the_dashboard_shows_what_an_incident_needs(transformed: dict[str, Any], kind: str) -> None:
    deployed = evaluate(transformed, {"ApiKind": kind})
    _, dashboard = one(deployed, "AWS::CloudWatch::Dashboard")
    body = json.loads(dashboard["DashboardBody"])
    titles = [widget["properties"]["title"] for widget in body["widgets"]]
    assert titles == [
        "Requests",
        "4xx and 5xx",
        "Latency (ms)",
        "Throttles",
        "Stops",
        "Cancel queues",
    ]
    shown = {
        (metric[0], metric[1])
        for widget in body["widgets"]
        for metric in widget["properties"]["metrics"]
        if isinstance(metric[0], str)
    }
    api4xx, api5xx = ("4XXError", "5XXError") if kind == "rest" else ("4xx", "5xx")
    assert {
        ("AWS/ApiGateway", "Count"),
        ("AWS/ApiGateway", api4xx),
        ("AWS/ApiGateway", api5xx),
        ("AWS/ApiGateway", "Latency"),
        ("AWS/Lambda", "Duration"),
        ("AWS/Lambda", "Throttles"),
        ("OpenHands/StopConversation", "ConversationStopped"),
        ("OpenHands/StopConversation", "ConversationNotRunning"),
        ("OpenHands/StopConversation", "Unauthorized"),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
    } <= shown
    latency = body["widgets"][2]["properties"]["metrics"]
    assert {m[-1]["stat"] for m in latency} == {"p50", "p99"}
    text = dashboard["DashboardBody"]
    assert ("ApiName" in text) is (kind == "rest")
    assert "${CancelDeadLetterQueue.QueueName}" in text
    assert deployed["Outputs"]["DashboardName"]["Value"] == "${OperationsDashboard}"


# -- capacity --------------------------------------------------------------------------------


def test_the_queues_are_high_throughput_fifo(default: Any) -> None:
    """Quotas per message group (one conversation), not per queue: 300 sends/s without."""
    for name in ("CancelQueue", "CancelDeadLetterQueue"):
        queue = default["Resources"][name]["Properties"]
        assert queue["FifoQueue"] is True, name
        assert queue["DeduplicationScope"] == "messageGroup", name
        assert queue["FifoThroughputLimit"] == "perMessageGroupId", name
