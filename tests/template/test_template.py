"""template.yaml after the SAM transform: every deployment decision, checked as deployed."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openhands_stop.aws.clients import CLIENT_CONFIG
from openhands_stop.constants import INSTANCE_HEX_DIGITS
from openhands_stop.edge.settings import RouteSettings

from local.emulation import table_definition
from tests.support import AwsCallCounter, worst_call_seconds
from tests.template.cfn import evaluate
from tests.template.support import (
    function_role_statements,
    offline_env,
    one,
    resources_of,
    sam_tool,
    stop_function,
)

STOP_ROUTE = "POST /api/conversations/{conversation_id}/stop"
# Stack names cannot hold `_`: no other stack queue names fall under this prefix.
WORKER_QUEUE_PREFIX = "${AWS::StackName}_cancel-worker-"
WORKER_QUEUES_ARN = (
    "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:"
    + WORKER_QUEUE_PREFIX
    + "?" * INSTANCE_HEX_DIGITS
    + ".fifo"
)
ACCOUNT_QUEUES_ARN = "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:*"
STACK_ALARMS_ARN = (
    "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:${AWS::StackName}-*"
)
HOOK_REPORTS_ARN = (
    "arn:${AWS::Partition}:codedeploy:${AWS::Region}:${AWS::AccountId}:deploymentgroup:"
    "${ServerlessDeploymentApplication}/*"
)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(deployed: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM statement the stack grants, with where it comes from."""
    for name, role in resources_of(deployed, "AWS::IAM::Role").items():
        for policy in role.get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                yield name, statement
    for name, policy in resources_of(deployed, "AWS::IAM::ManagedPolicy").items():
        for statement in policy["PolicyDocument"]["Statement"]:
            yield name, statement


@pytest.fixture(scope="module")
def default(transformed: dict[str, Any]) -> Any:
    return evaluate(transformed)


# -- the function -------------------------------------------------------------------------


def test_the_function_is_arm64_python313_behind_a_published_alias(default: Any) -> None:
    _, function = stop_function(default)
    assert function["Architectures"] == ["arm64"]
    assert function["Runtime"] == "python3.13"
    assert function["Handler"] == "app.handler"
    assert function["MemorySize"] == 512
    assert function["Timeout"] == 15
    _, alias = one(default, "AWS::Lambda::Alias")
    assert alias["Name"] == "live"
    assert alias["FunctionVersion"].endswith(".Version}")
    _, layer = one(default, "AWS::Lambda::LayerVersion")
    assert layer["CompatibleArchitectures"] == ["arm64"]
    assert layer["CompatibleRuntimes"] == ["python3.13"]
    assert function["Layers"] == ["${" + one(default, "AWS::Lambda::LayerVersion")[0] + "}"]


def test_the_timeout_leaves_room_for_one_dependency_s_retries_under_the_api_limit(
    default: Any,
) -> None:
    """A warm stop's worst case (write and send, from CLIENT_CONFIG) fits; API Gateway waits
    longer than the function, and no longer than its own limit."""
    _, function = stop_function(default)
    _, integration = one(default, "AWS::ApiGatewayV2::Integration")
    worst = sum(worst_call_seconds(CLIENT_CONFIG, name) for name in ("dynamodb", "sqs"))
    assert worst < function["Timeout"] < 30
    assert function["Timeout"] * 1000 < integration["TimeoutInMillis"] <= 30000


def test_snapstart_is_off_by_default_and_applies_to_published_versions_when_chosen(
    transformed: dict[str, Any], default: Any
) -> None:
    assert "SnapStart" not in stop_function(default)[1]
    chosen = evaluate(transformed, {"EnableSnapStart": "true"})
    assert stop_function(chosen)[1]["SnapStart"] == {"ApplyOn": "PublishedVersions"}


def test_reserved_concurrency_is_a_parameter(transformed: dict[str, Any], default: Any) -> None:
    assert "ReservedConcurrentExecutions" not in stop_function(default)[1]
    capped = evaluate(transformed, {"ReservedConcurrency": "5"})
    assert stop_function(capped)[1]["ReservedConcurrentExecutions"] == "5"


def test_logs_are_json_in_a_group_with_retention(transformed: dict[str, Any]) -> None:
    deployed = evaluate(transformed, {"LogRetentionDays": "90", "LogLevel": "WARN"})
    _, function = stop_function(deployed)
    logging = function["LoggingConfig"]
    assert logging["LogFormat"] == "JSON"
    assert logging["ApplicationLogLevel"] == "WARN"
    group = logging["LogGroup"].removeprefix("${").removesuffix("}")
    assert deployed["Resources"][group]["Properties"]["RetentionInDays"] == "90"
    groups = resources_of(deployed, "AWS::Logs::LogGroup")
    assert len(groups) == 3  # the function's, the API's access logs, the pre-traffic hook's
    assert all(group["RetentionInDays"] == "90" for group in groups.values())


def test_the_environment_carries_every_setting_the_code_requires(default: Any) -> None:
    env = stop_function(default)[1]["Environment"]["Variables"]
    assert env["CONVERSATIONS_TABLE_NAME"] == "${ConversationsTable}"
    assert env["CANCEL_QUEUE_URL"] == "${CancelQueue}"
    assert env["SESSION_API_KEY_SECRET_ID"] == "${SessionApiKeySecret}"
    assert env["POWERTOOLS_SERVICE_NAME"] == "stop-conversation"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "OpenHands/StopConversation"
    assert env["POWERTOOLS_LOGGER_LOG_EVENT"] == "false"
    required = {
        field.alias
        for field in RouteSettings.model_fields.values()
        if field.is_required() and field.alias
    }
    assert required <= set(env)


def test_tracing_is_a_parameter_that_switches_the_function_and_the_code(
    transformed: dict[str, Any], default: Any
) -> None:
    function = stop_function(default)[1]
    assert function["TracingConfig"] == {"Mode": "PassThrough"}
    assert function["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == "true"
    traced = stop_function(evaluate(transformed, {"EnableTracing": "true"}))[1]
    assert traced["TracingConfig"] == {"Mode": "Active"}
    assert traced["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == "false"


# -- IAM ------------------------------------------------------------------------------------


def test_no_allow_statement_has_a_wildcard_action_or_resource(default: Any) -> None:
    granted = list(statements(default))
    assert granted
    for source, statement in granted:
        assert statement["Effect"] == "Allow", source
        for action in as_list(statement["Action"]):
            assert "*" not in action, (source, statement)
        for resource in as_list(statement["Resource"]):
            # A log group's ARN ends in ":*" (its streams); the workers' queues are the
            # stack's prefix (ListQueues has no per-queue resource: the account's queues in
            # this region); CodeDeploy reads the stack's alarms (generated names start with
            # the stack's) and the hook reports to the stack's CodeDeploy application's
            # groups; nothing else may hold a "*".
            allowed = (
                "${FunctionLogGroup.Arn}",
                "${PreTrafficHookLogGroup.Arn}",
                WORKER_QUEUES_ARN,
                ACCOUNT_QUEUES_ARN,
                STACK_ALARMS_ARN,
                HOOK_REPORTS_ARN,
            )
            assert resource in allowed or "*" not in resource, (source, statement)
    for role in resources_of(default, "AWS::IAM::Role").values():
        assert "ManagedPolicyArns" not in role, "AWS managed policies grant on every resource"


def test_the_function_gets_one_statement_per_need(default: Any) -> None:
    found = function_role_statements(default)
    assert {sid: (as_list(s["Action"]), as_list(s["Resource"])) for sid, s in found.items()} == {
        "WriteLogs": (
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            ["${FunctionLogGroup.Arn}"],
        ),
        "StopConversation": (["dynamodb:UpdateItem"], ["${ConversationsTable.Arn}"]),
        # A confirmed stop (StopWaitSeconds above 0, the default) reads the row: GetItem only.
        "ConfirmStop": (["dynamodb:GetItem"], ["${ConversationsTable.Arn}"]),
        "SendCancel": (["sqs:SendMessage"], ["${CancelQueue.Arn}", WORKER_QUEUES_ARN]),
        "ReadSessionKey": (["secretsmanager:GetSecretValue"], ["${SessionApiKeySecret}"]),
    }


def test_without_the_wait_the_function_reads_nothing_and_has_no_unconfirmed_alarm(
    transformed: dict[str, Any],
) -> None:
    no_wait = evaluate(transformed, {"StopWaitSeconds": "0"})
    assert "ConfirmStop" not in function_role_statements(no_wait)
    assert "StopUnconfirmedAlarm" not in resources_of(no_wait, "AWS::CloudWatch::Alarm")
    env = stop_function(no_wait)[1]["Environment"]["Variables"]
    assert env["STOP_WAIT_SECONDS"] == "0"


def test_the_function_role_allows_every_aws_call_the_code_makes(
    default: Any, seeded: Any, lambda_handler: Any
) -> None:
    """The real handler through stop, resend and refusal: each operation it calls is granted."""
    events = Path(__file__).resolve().parents[2] / "events"
    with AwsCallCounter() as calls:
        for name in ("stop-running", "stop-running", "stop-unknown", "stop-wrong-key"):
            lambda_handler(json.loads((events / f"{name}.json").read_text()))
    used = {_iam_action(call) for call in calls.calls}
    granted = {a for s in function_role_statements(default).values() for a in as_list(s["Action"])}
    assert used == {
        "dynamodb:UpdateItem",
        "sqs:SendMessage",
        "secretsmanager:GetSecretValue",
    }
    assert used <= granted


def _iam_action(call: str) -> str:
    service, operation = call.split(".")
    return f"{service}:{operation}"


def test_the_route_and_the_workers_share_one_worker_queue_prefix(default: Any) -> None:
    """The prefix the code checks, the one IAM allows, and the one workers are told agree."""
    env = stop_function(default)[1]["Environment"]["Variables"]
    assert env["WORKER_QUEUE_PREFIX"] == WORKER_QUEUE_PREFIX
    assert default["Outputs"]["WorkerQueuePrefix"]["Value"] == WORKER_QUEUE_PREFIX
    send = function_role_statements(default)["SendCancel"]
    assert WORKER_QUEUES_ARN in send["Resource"]


def test_tracing_adds_only_the_xray_write_statement(transformed: dict[str, Any]) -> None:
    traced = function_role_statements(evaluate(transformed, {"EnableTracing": "true"}))
    assert traced["WriteTraces"] == {
        "Sid": "WriteTraces",
        "Effect": "Allow",
        "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
        "Resource": "*",
    }
    assert set(traced) == {
        "WriteLogs",
        "StopConversation",
        "ConfirmStop",
        "SendCancel",
        "ReadSessionKey",
        "WriteTraces",
    }


def test_the_worker_policy_grants_exactly_what_workers_need(default: Any) -> None:
    name, policy = one(default, "AWS::IAM::ManagedPolicy")
    granted = {
        s["Sid"]: (sorted(as_list(s["Action"])), as_list(s["Resource"]))
        for s in policy["PolicyDocument"]["Statement"]
    }
    assert granted == {
        "RunConversations": (
            [
                "dynamodb:BatchGetItem",
                "dynamodb:DeleteItem",
                "dynamodb:GetItem",
                "dynamodb:UpdateItem",
            ],
            ["${ConversationsTable.Arn}"],
        ),
        "FindRunsAndWorkers": (
            ["dynamodb:Query"],
            [
                "${ConversationsTable.Arn}/index/runs-by-worker",
                "${ConversationsTable.Arn}/index/workers",
            ],
        ),
        "ConsumeCancels": (
            [
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ReceiveMessage",
            ],
            ["${CancelQueue.Arn}"],
        ),
        "SetAsideUnreadableCancels": (["sqs:SendMessage"], ["${CancelDeadLetterQueue.Arn}"]),
        # No SetQueueAttributes (a queue's policy is set at CreateQueue): no worker can
        # rewrite a peer's policy. SendMessage: a fallback cancel sent on to its holder.
        "OwnWorkerQueues": (
            [
                "sqs:ChangeMessageVisibility",
                "sqs:CreateQueue",
                "sqs:DeleteMessage",
                "sqs:DeleteQueue",
                "sqs:GetQueueAttributes",
                "sqs:ReceiveMessage",
                "sqs:SendMessage",
            ],
            [WORKER_QUEUES_ARN],
        ),
        "FindWorkerQueues": (["sqs:ListQueues"], [ACCOUNT_QUEUES_ARN]),
    }
    assert default["Outputs"]["AgentWorkerPolicyArn"]["Value"] == "${" + name + "}"


# -- data -------------------------------------------------------------------------------------


def test_the_table_is_on_demand_recoverable_encrypted_and_protected(
    transformed: dict[str, Any], default: Any
) -> None:
    table = default["Resources"]["ConversationsTable"]
    properties = table["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"]["SSEEnabled"] is True
    assert properties["DeletionProtectionEnabled"] == "true"
    assert table["UpdateReplacePolicy"] == "Retain"
    unprotected = evaluate(transformed, {"TableDeletionProtection": "false"})
    assert (
        unprotected["Resources"]["ConversationsTable"]["Properties"]["DeletionProtectionEnabled"]
        == "false"
    )


def test_the_table_key_is_the_one_the_code_and_the_emulation_use(default: Any) -> None:
    properties = default["Resources"]["ConversationsTable"]["Properties"]
    assert properties["KeySchema"] == [{"AttributeName": "conversation_id", "KeyType": "HASH"}]
    # The keys of the workers' two sparse indexes (tests/test_template_schema.py) besides.
    assert properties["AttributeDefinitions"] == [
        {"AttributeName": "conversation_id", "AttributeType": "S"},
        {"AttributeName": "worker_instance", "AttributeType": "S"},
        {"AttributeName": "roster", "AttributeType": "S"},
    ]
    assert table_definition()["KeySchema"] == properties["KeySchema"]
    assert table_definition()["GlobalSecondaryIndexes"] == properties["GlobalSecondaryIndexes"]


def test_the_cancel_queue_is_fifo_encrypted_and_redrives_to_a_longer_lived_dlq(
    default: Any,
) -> None:
    queue = default["Resources"]["CancelQueue"]["Properties"]
    dlq = default["Resources"]["CancelDeadLetterQueue"]["Properties"]
    for properties in (queue, dlq):
        assert properties["FifoQueue"] is True
        assert properties["SqsManagedSseEnabled"] is True
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": "${CancelDeadLetterQueue.Arn}",
        "maxReceiveCount": 5,
    }
    assert queue["MessageRetentionPeriod"] == 86400
    # A FIFO message keeps its first enqueue time in the DLQ: the DLQ must keep it longer.
    assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]
    assert len(resources_of(default, "AWS::SQS::Queue")) == 2


def test_the_secret_is_generated_never_written_in_the_template(
    transformed: dict[str, Any], default: Any
) -> None:
    secret = default["Resources"]["SessionApiKeySecret"]["Properties"]
    assert secret["GenerateSecretString"]["PasswordLength"] >= 32
    assert "SecretString" not in secret
    assert '"SecretString"' not in json.dumps(transformed)


# -- API --------------------------------------------------------------------------------------


def test_only_the_stop_route_exists_and_it_reaches_the_alias(default: Any) -> None:
    _, api = one(default, "AWS::ApiGatewayV2::Api")
    assert api["ProtocolType"] == "HTTP"
    assert not {"Target", "RouteKey", "Body", "BodyS3Location"} & set(api), "no quick-create route"
    _, route = one(default, "AWS::ApiGatewayV2::Route")
    assert route["RouteKey"] == STOP_ROUTE
    integration_name, integration = one(default, "AWS::ApiGatewayV2::Integration")
    assert route["Target"] == "integrations/${" + integration_name + "}"
    alias_name, _ = one(default, "AWS::Lambda::Alias")
    assert integration["IntegrationUri"] == "${" + alias_name + "}"
    assert integration["IntegrationType"] == "AWS_PROXY"
    assert integration["PayloadFormatVersion"] == "2.0"
    _, permission = one(default, "AWS::Lambda::Permission")
    assert permission["FunctionName"] == "${" + alias_name + "}"
    assert permission["SourceArn"].endswith("${StopApi}/*/POST/api/conversations/*/stop")


def test_throttling_defaults_to_a_fleet_wide_stop_and_is_a_parameter(
    transformed: dict[str, Any], default: Any
) -> None:
    """10,000 agents stopped in under a minute at the default rate."""
    _, stage = one(default, "AWS::ApiGatewayV2::Stage")
    assert stage["StageName"] == "$default"
    assert stage["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": "200",
        "ThrottlingBurstLimit": "400",
    }
    assert 10_000 / int(stage["DefaultRouteSettings"]["ThrottlingRateLimit"]) < 60
    raised = evaluate(
        transformed, {"ApiThrottlingRateLimit": "50", "ApiThrottlingBurstLimit": "100"}
    )
    assert one(raised, "AWS::ApiGatewayV2::Stage")[1]["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": "50",
        "ThrottlingBurstLimit": "100",
    }


def test_access_logs_are_json_and_never_carry_headers(default: Any) -> None:
    _, stage = one(default, "AWS::ApiGatewayV2::Stage")
    settings = stage["AccessLogSettings"]
    assert settings["DestinationArn"] == "${ApiAccessLogGroup.Arn}"
    record = json.loads(settings["Format"])
    assert record["requestId"] == "$context.requestId"
    assert record["status"] == "$context.status"
    assert "header" not in settings["Format"].lower()


def test_cors_is_off_by_default_and_lists_the_given_origins(
    transformed: dict[str, Any], default: Any
) -> None:
    assert "CorsConfiguration" not in one(default, "AWS::ApiGatewayV2::Api")[1]
    origins = "https://app.example.com,https://staging.example.com"
    cors = one(evaluate(transformed, {"CorsAllowOrigins": origins}), "AWS::ApiGatewayV2::Api")[1][
        "CorsConfiguration"
    ]
    assert cors["AllowOrigins"] == origins.split(",")
    assert cors["AllowMethods"] == ["POST"]
    assert "x-session-api-key" in cors["AllowHeaders"]


# -- alarms -----------------------------------------------------------------------------------

ALARMED = {
    ("AWS/Lambda", "Errors"),
    ("AWS/Lambda", "Throttles"),
    ("AWS/Lambda", "Duration"),
    ("AWS/ApiGateway", "5xx"),
    ("AWS/ApiGateway", "Latency"),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
    ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
    ("OpenHands/StopConversation", "DependencyFailure"),
    ("OpenHands/StopConversation", "Unauthorized"),
    ("OpenHands/StopConversation", "StopUnconfirmed"),
}


def test_alarms_watch_errors_throttles_api_5xx_and_the_dead_letter_queue(default: Any) -> None:
    alarms = resources_of(default, "AWS::CloudWatch::Alarm")
    single = {name: a for name, a in alarms.items() if "Metrics" not in a}
    assert {(a["Namespace"], a["MetricName"]) for a in single.values()} == ALARMED
    assert set(alarms) - set(single) == {"ApiClientErrorAlarm"}  # metric math: 4xx - 401
    by_metric = {a["MetricName"]: a for a in single.values()}
    function_name = stop_function(default)[0]
    assert by_metric["Errors"]["Dimensions"] == [
        {"Name": "FunctionName", "Value": "${" + function_name + "}"}
    ]
    assert by_metric["5xx"]["Dimensions"] == [{"Name": "ApiId", "Value": "${StopApi}"}]
    assert by_metric["ApproximateNumberOfMessagesVisible"]["Dimensions"] == [
        {"Name": "QueueName", "Value": "${CancelDeadLetterQueue.QueueName}"}
    ]
    for alarm in alarms.values():
        assert alarm["TreatMissingData"] == "notBreaching"
        assert "AlarmActions" not in alarm, "no target by default"
    assert not resources_of(default, "AWS::SNS::Topic")


@pytest.mark.parametrize(
    ("parameters", "actions"),
    [
        ({"AlarmEmail": "ops@example.com"}, ["${AlarmTopic}"]),
        ({"AlarmTopicArn": "arn:aws:sns:us-east-1:1:ops"}, ["arn:aws:sns:us-east-1:1:ops"]),
        (
            {"AlarmEmail": "ops@example.com", "AlarmTopicArn": "arn:aws:sns:us-east-1:1:ops"},
            ["${AlarmTopic}", "arn:aws:sns:us-east-1:1:ops"],
        ),
    ],
)
def test_alarms_notify_the_chosen_topic_or_email(
    transformed: dict[str, Any], parameters: dict[str, str], actions: list[str]
) -> None:
    deployed = evaluate(transformed, parameters)
    alarms = resources_of(deployed, "AWS::CloudWatch::Alarm")
    assert len(alarms) == len(ALARMED) + 1  # and the client-error alarm
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == actions
        assert alarm["OKActions"] == actions
    topics = resources_of(deployed, "AWS::SNS::Topic")
    if "AlarmEmail" in parameters:
        assert topics["AlarmTopic"]["Subscription"] == [
            {"Protocol": "email", "Endpoint": "ops@example.com"}
        ]
        # CloudWatch cannot publish to a topic under the AWS managed aws/sns key.
        assert topics["AlarmTopic"].get("KmsMasterKeyId") != "alias/aws/sns"
    else:
        assert not topics


# -- outputs and parameters ----------------------------------------------------------------


def test_outputs_give_what_a_deployer_and_the_workers_need(default: Any) -> None:
    outputs = {name: body["Value"] for name, body in default["Outputs"].items()}
    assert outputs["StopUrl"] == (
        "https://${StopApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"
        "/api/conversations/{conversation_id}/stop"
    )
    assert outputs["ConversationsTableName"] == "${ConversationsTable}"
    assert outputs["CancelQueueUrl"] == "${CancelQueue}"
    assert outputs["SessionApiKeySecretArn"] == "${SessionApiKeySecret}"
    assert outputs["AgentWorkerPolicyArn"] == "${AgentWorkerPolicy}"
    assert outputs["FunctionLogGroupName"] == "${FunctionLogGroup}"


def test_every_parameter_is_described_and_documented(transformed: dict[str, Any]) -> None:
    root = Path(__file__).resolve().parents[2]
    docs = (root / "docs" / "deploy.md").read_text()
    for name, spec in transformed["Parameters"].items():
        assert len(spec.get("Description", "")) > 20, name
        assert f"`{name}`" in docs, f"docs/deploy.md does not explain {name}"


def test_cfn_lint_passes_on_the_transformed_template(
    transformed: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "transformed.json"
    path.write_text(json.dumps(transformed))
    result = subprocess.run(
        [str(sam_tool("cfn-lint")), str(path)],
        capture_output=True,
        text=True,
        env=offline_env(),
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
