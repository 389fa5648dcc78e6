"""Who may send and receive cancels, whatever IAM policies in the account allow; what may
dead-letter into the DLQ; and ARN parameters that cannot widen any of it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.template.cfn import evaluate
from tests.template.support import function_role_statements, stop_function

ROLE = "${StopConversationRole.Arn}"
ACCOUNT = "111122223333"
SQS = f"arn:aws:sqs:us-east-1:{ACCOUNT}:"
IAM = f"arn:aws:iam::{ACCOUNT}:"
WORKER_ROLES = f"{IAM}role/agent-a,arn:aws:iam::111122223333:role/ops/agent-b"


def queue_policy(deployed: dict[str, Any], queue: str) -> dict[str, dict[str, Any]]:
    """The statements, by Sid, of the policy attached to ``queue``."""
    policies = [
        body["Properties"]
        for body in deployed["Resources"].values()
        if body["Type"] == "AWS::SQS::QueuePolicy"
        and body["Properties"]["Queues"] == ["${" + queue + "}"]
    ]
    (policy,) = policies
    return {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}


@pytest.fixture(scope="module")
def default(transformed: dict[str, Any]) -> Any:
    return evaluate(transformed)


def test_only_the_stop_functions_role_may_send_a_cancel(default: Any) -> None:
    """Anyone else with sqs:SendMessage (even sqs:*) is denied: no stop without the key."""
    statements = queue_policy(default, "CancelQueue")
    deny = statements["OnlyTheStopFunctionSendsCancels"]
    assert deny["Effect"] == "Deny"
    assert deny["Principal"] == "*"
    assert deny["Action"] == "sqs:SendMessage"
    assert deny["Resource"] == "${CancelQueue.Arn}"
    assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": ROLE}}
    # The role the condition spares is the function's, and it holds the SendCancel grant.
    assert stop_function(default)[1]["Role"] == ROLE
    assert "sqs:SendMessage" in json.dumps(function_role_statements(default)["SendCancel"])
    assert not [s for s in statements.values() if s["Effect"] == "Allow"], "grants stay in IAM"


def test_every_queue_refuses_requests_without_tls(default: Any) -> None:
    for queue in ("CancelQueue", "CancelDeadLetterQueue"):
        tls = queue_policy(default, queue)["DenyWithoutTls"]
        assert (tls["Effect"], tls["Principal"], tls["Action"]) == ("Deny", "*", "sqs:*")
        assert tls["Resource"] == "${" + queue + ".Arn}"
        assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_receiving_is_left_to_iam_unless_worker_roles_are_given(
    transformed: dict[str, Any], default: Any
) -> None:
    assert "OnlyWorkersReceiveCancels" not in queue_policy(default, "CancelQueue")
    deployed = evaluate(transformed, {"WorkerRoleArns": WORKER_ROLES})
    deny = queue_policy(deployed, "CancelQueue")["OnlyWorkersReceiveCancels"]
    assert deny["Effect"] == "Deny"
    assert deny["Principal"] == "*"
    assert sorted(deny["Action"]) == [
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:ReceiveMessage",
    ]
    assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": WORKER_ROLES.split(",")}}


def test_a_worker_copying_the_policy_onto_its_queue_gets_a_policy_for_that_queue(
    transformed: dict[str, Any],
) -> None:
    """Workers copy the stack queue's Policy attribute, replacing its ARN with their own
    queue's: the result must protect their queue alone, with the same principals."""
    deployed = evaluate(transformed, {"WorkerRoleArns": WORKER_ROLES})
    stack_queue_arn = f"{SQS}stop-cancel.fifo"
    worker_arn = f"{SQS}stop_cancel-worker-0123456789ab.fifo"
    policy = json.dumps(queue_policy(deployed, "CancelQueue")).replace(
        "${CancelQueue.Arn}", stack_queue_arn
    )
    copied = json.loads(policy.replace(stack_queue_arn, worker_arn))
    assert {s["Resource"] for s in copied.values()} == {worker_arn}
    assert stack_queue_arn not in json.dumps(copied)
    assert copied["OnlyTheStopFunctionSendsCancels"]["Condition"] == {
        "ArnNotEquals": {"aws:PrincipalArn": ROLE}
    }
    assert set(copied) == {
        "DenyWithoutTls",
        "OnlyTheStopFunctionSendsCancels",
        "OnlyWorkersReceiveCancels",
    }


def test_the_dlq_takes_the_fleets_worker_queues_by_default_or_names_its_sources(
    transformed: dict[str, Any], default: Any
) -> None:
    """Workers create their queues at run time (any number, not known to the stack), and SQS
    names at most 10 sources and no wildcard: by default every queue of the account (redrive
    never crosses accounts); ``stack-queues`` names the stack queue and hand-made ones."""
    queue = default["Resources"]["CancelQueue"]["Properties"]
    assert queue["QueueName"] == "${AWS::StackName}-cancel.fifo"
    stack_queue = "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:" + (
        "${AWS::StackName}-cancel.fifo"
    )
    dlq = default["Resources"]["CancelDeadLetterQueue"]["Properties"]
    assert dlq["RedriveAllowPolicy"] == {"redrivePermission": "allowAll"}
    named = evaluate(transformed, {"DeadLetterSources": "stack-queues"})
    assert named["Resources"]["CancelDeadLetterQueue"]["Properties"]["RedriveAllowPolicy"] == {
        "redrivePermission": "byQueue",
        "sourceQueueArns": [stack_queue],
    }


ARN_EXAMPLES: dict[str, tuple[list[str], list[str]]] = {
    "WorkerRoleArns": (
        ["", f"{IAM}role/agent", f"{IAM}role/path/agent"],
        [
            "*",
            f"{IAM}role/*",
            "arn:aws:iam::*:role/agent",
            f"{IAM}user/u",
        ],
    ),
    "AlarmTopicArn": (
        ["", "arn:aws:sns:us-east-1:111122223333:ops"],
        ["*", "arn:aws:sns:us-east-1:111122223333:*", f"{SQS}ops"],
    ),
    "PermissionsBoundaryArn": (
        [
            "",
            f"{IAM}policy/boundary",
            "arn:aws:iam::aws:policy/PowerUserAccess",
        ],
        ["*", f"{IAM}policy/*", f"{IAM}role/r"],
    ),
}


def test_every_arn_parameter_has_a_pattern(transformed: dict[str, Any]) -> None:
    arn_parameters = {name for name in transformed["Parameters"] if re.search(r"Arns?$", name)}
    assert arn_parameters == set(ARN_EXAMPLES)
    for name in arn_parameters:
        assert transformed["Parameters"][name].get("AllowedPattern"), name


@pytest.mark.parametrize("name", sorted(ARN_EXAMPLES))
def test_arn_patterns_accept_arns_and_refuse_wildcards(
    transformed: dict[str, Any], name: str
) -> None:
    """CloudFormation matches the whole value (each item of a list) against the pattern."""
    pattern = re.compile(transformed["Parameters"][name]["AllowedPattern"])
    accepted, refused = ARN_EXAMPLES[name]
    for value in accepted:
        assert pattern.fullmatch(value), (name, value)
    for value in refused:
        assert not pattern.fullmatch(value), (name, value)
