"""The `live` alias follows every change of what runs: the layer, the function, the settings,
and the resources it names, replaced ones included.

The API invokes `live`. A deploy that changes what runs but publishes no version leaves
`live` on the old code while `sam deploy` reports success. A version is published when the
transformed template holds a Version resource with a new logical id (a new resource) or a
new Description (which CloudFormation cannot update in place: it replaces the version).

A replaced resource (a renamed queue, a table whose key changed) keeps its logical id, so
every ``Ref`` to it reads the same in the template: only its physical name changes, once
deployed. The tests below give the evaluator the physical names CloudFormation would
(generated ones for unnamed resources, new ones for replaced resources), as ``physical``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.template.cfn import evaluate
from tests.template.support import ROOT, TEMPLATE, transform

VERSION = "AWS::Lambda::Version"
STACK = "openhands-stop"
LONGEST_STACK = "s" * 48  # docs/deploy.md: worker queues' names allow 48 characters
ACCOUNT = "111122223333"

# The properties whose change makes CloudFormation replace each kind of resource the
# function names (the CloudFormation reference's "Update requires: Replacement").
REPLACED_BY = {
    "AWS::DynamoDB::Table": {"TableName", "KeySchema", "LocalSecondaryIndexes"},
    "AWS::SQS::Queue": {"QueueName", "FifoQueue"},
    "AWS::SecretsManager::Secret": {"Name"},
}


def _random(*parts: object, length: int = 12) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:length].upper()


def physical_names(
    transformed: dict[str, Any],
    *,
    stack: str = STACK,
    generation: dict[str, int] | None = None,
    layer_version: int = 1,
) -> dict[str, str]:
    """What CloudFormation resolves Ref and GetAtt to once deployed: a generated name
    (STACK-LogicalId-RANDOM) for an unnamed table, ARN and generated name for the secret,
    the given name for the queue; ``generation`` counts each resource's replacements."""
    generation = generation or {}
    resources = transformed["Resources"]
    queue = evaluate(transformed)["Resources"]["CancelQueue"]["Properties"]
    queue_name = queue["QueueName"].replace("${AWS::StackName}", stack)
    table_random = _random("table", generation.get("ConversationsTable", 0), length=13)
    secret_random = _random("secret", generation.get("SessionApiKeySecret", 0))
    secret_suffix = _random("secret-arn", generation.get("SessionApiKeySecret", 0), length=6)
    (layer,) = [n for n, b in resources.items() if b["Type"] == "AWS::Lambda::LayerVersion"]
    return {
        "ConversationsTable": f"{stack}-ConversationsTable-{table_random}",
        "CancelQueue.QueueName": queue_name,
        "SessionApiKeySecret": (
            f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:"
            f"SessionApiKeySecret-{secret_random}-{secret_suffix}"
        ),
        layer: f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:DependenciesLayer:{layer_version}",
    }


def replaced(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Which resources CloudFormation replaces between two transformed templates."""
    generation = {}
    for name, body in before["Resources"].items():
        keys = REPLACED_BY.get(body["Type"], set())
        new = after["Resources"].get(name, {}).get("Properties", {})
        if any(body["Properties"].get(key) != new.get(key) for key in keys):
            generation[name] = 1
    return generation


def published(
    transformed: dict[str, Any],
    parameters: dict[str, str] | None = None,
    physical: dict[str, str] | None = None,
) -> Any:
    """What identifies the published version: its logical id and its evaluated Description."""
    deployed = evaluate(transformed, parameters, physical or physical_names(transformed))
    versions = {
        name: body["Properties"]
        for name, body in deployed["Resources"].items()
        if body["Type"] == VERSION
    }
    ((name, version),) = versions.items()
    return name, version["Description"]


def test_the_alias_points_at_the_one_published_version(transformed: dict[str, Any]) -> None:
    deployed = evaluate(transformed)
    name, _ = published(transformed)
    (alias,) = [
        b["Properties"] for b in deployed["Resources"].values() if b["Type"].endswith("Alias")
    ]
    assert alias["FunctionVersion"] == "${" + name + ".Version}"


def test_a_new_layer_publishes_a_new_version(transformed: dict[str, Any]) -> None:
    """All application code is in the layer: a rebuilt layer is uploaded under a new key."""
    rebuilt = transform(code={"DependenciesLayer": "s3://artifacts/DependenciesLayer-v2.zip"})
    before = published(transformed)
    after = published(rebuilt, physical=physical_names(rebuilt, layer_version=2))
    assert before[0] != after[0], "the version's logical id follows the layer's content"
    assert before[1] != after[1], "and its description names the new layer's version"


def test_a_new_function_code_publishes_a_new_version(transformed: dict[str, Any]) -> None:
    rebuilt = transform(code={"StopConversationFunction": "s3://artifacts/app-v2.zip"})
    assert published(transformed)[0] != published(rebuilt)[0]


@pytest.mark.parametrize(
    "change",
    [
        {"LogLevel": "DEBUG"},
        {"EnableTracing": "true"},
        {"EnableSnapStart": "true"},
        {"MetricsNamespace": "Other/Namespace"},
        {"PreviousKeyGraceSeconds": "0"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_a_changed_setting_publishes_a_new_version(
    transformed: dict[str, Any], change: dict[str, str]
) -> None:
    """Transformed with the new value, as CloudFormation transforms it on deploy."""
    before = published(transformed)
    after = published(transform(change), change)
    assert after != before
    # Same logical id, new Description: the Description is replaced, publishing a version.
    assert after[1] != before[1]


def edited(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of template.yaml with one edit, as a change to the stack would be."""
    text = TEMPLATE.read_text()
    assert text.count(old) == 1, old
    copy = tmp_path / "template.yaml"
    copy.write_text(text.replace(old, new))
    return copy


REPLACEMENTS = {
    # The cancel queue renamed (docs/deploy.md prescribed such an upgrade once).
    "queue-renamed": (
        'QueueName: !Sub "${AWS::StackName}-cancel.fifo"',
        'QueueName: !Sub "${AWS::StackName}-cancels.fifo"',
        "CancelQueue",
    ),
    # The table's key changed: a new table (the old one is retained, not deleted).
    "table-rekeyed": (
        "KeySchema:\n        - AttributeName: conversation_id\n          KeyType: HASH",
        "KeySchema:\n        - AttributeName: conversation_id\n          KeyType: HASH\n"
        "      LocalSecondaryIndexes: []",
        "ConversationsTable",
    ),
}


@pytest.mark.parametrize("case", sorted(REPLACEMENTS))
def test_a_replaced_resource_publishes_a_new_version(
    transformed: dict[str, Any], tmp_path: Path, case: str
) -> None:
    """Transformed before and after a change that replaces a resource the function names:
    its Ref reads the same, so SAM alone names the same version; the description, with the
    physical name's changing part, makes CloudFormation publish a new one."""
    old, new, resource = REPLACEMENTS[case]
    after = transform(template=edited(tmp_path, old, new))
    generation = replaced(transformed, after)
    assert set(generation) == {resource}, "the edit replaces that resource, and only it"
    before_version = published(transformed, physical=physical_names(transformed))
    after_version = published(after, physical=physical_names(after, generation=generation))
    assert before_version[0] == after_version[0], "SAM's hash alone would keep the version"
    assert before_version[1] != after_version[1], "the description publishes a new one"


def test_a_replaced_secret_publishes_a_new_version(transformed: dict[str, Any]) -> None:
    """The secret is replaced (a new generated name and ARN) with no edit SAM can see."""
    before = published(transformed, physical=physical_names(transformed))
    after = published(
        transformed,
        physical=physical_names(transformed, generation={"SessionApiKeySecret": 1}),
    )
    assert before[0] == after[0]
    assert before[1] != after[1]


def test_an_update_that_replaces_nothing_publishes_nothing(transformed: dict[str, Any]) -> None:
    """No needless versions (each one is a CodeDeploy deployment): same names, same version."""
    again = transform()
    assert not replaced(transformed, again)
    assert published(transformed) == published(again)


def test_every_resource_the_function_names_is_in_the_version_description(
    transformed: dict[str, Any],
) -> None:
    """A resource the function's properties name (Ref, GetAtt, Sub) whose replacement would
    leave `live` on its old physical name is in the description. The role and the log group
    are not: the role has no name or path in the template (nothing replaces it but a
    renamed logical id, which changes the function's properties anyway), and a replaced log
    group is retained, so an old version still logs somewhere that exists."""
    function = transformed["Resources"]["StopConversationFunction"]["Properties"]
    named = _resources_named(function, transformed) - {"StopConversationRole", "FunctionLogGroup"}
    (version,) = [b for b in transformed["Resources"].values() if b["Type"] == VERSION]
    description = version["Properties"]["Description"]
    in_description = _resources_named(description, transformed)
    assert named, "the function names resources"
    assert named <= in_description, named - in_description
    # The markers that cut a generated name's random part are those resources' logical ids.
    for name in ("ConversationsTable", "SessionApiKeySecret"):
        assert f"{name}-" in str(description)
        assert not {"TableName", "Name"} & set(transformed["Resources"][name]["Properties"]), (
            f"{name} is named: its marker finds nothing, put its name in the description"
        )


def _resources_named(node: Any, template: dict[str, Any]) -> set[str]:
    resources = template["Resources"]
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= _resources_named(item, template)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and value in resources:
                found.add(value)
            elif key == "Fn::GetAtt":
                target = value[0] if isinstance(value, list) else value.split(".")[0]
                found.add(target)
            else:
                found |= _resources_named(value, template)
    elif isinstance(node, str):
        found |= {name for name in resources if "${" + name + "}" in node}
        found |= {name for name in resources if "${" + name + "." in node}
    return found


def test_every_parameter_the_function_reads_is_in_the_version_description(
    transformed: dict[str, Any],
) -> None:
    """A parameter added to the function later must publish too: each one the function's
    properties reach (directly or through a condition) changes the Description."""
    function = transformed["Resources"]["StopConversationFunction"]
    reached = _parameters_reached(function["Properties"], transformed)
    # Reserved concurrency and tags are the function's, not a version's: they apply without
    # a new version (Environment reaches the function only through those two).
    reached -= {"ReservedConcurrency", "Environment"}
    assert reached, "the function reads parameters"
    for name in sorted(reached):
        assert "${" + name + "}" in _description_text(transformed), name


def _description_text(transformed: dict[str, Any]) -> str:
    (version,) = [b for b in transformed["Resources"].values() if b["Type"] == VERSION]
    text, _ = version["Properties"]["Description"]["Fn::Sub"]
    assert isinstance(text, str)
    return text


def test_the_description_fits_lambda_s_limit_with_the_longest_values(
    transformed: dict[str, Any],
) -> None:
    parameters = transformed["Parameters"]
    longest = {
        "LogLevel": "ERROR",
        "EnableTracing": "false",
        "EnableSnapStart": "false",
        "MetricsNamespace": "N" * parameters["MetricsNamespace"]["MaxLength"],
        "PreviousKeyGraceSeconds": str(
            transformed["Parameters"]["PreviousKeyGraceSeconds"]["MaxValue"]
        ),
    }
    names = physical_names(transformed, stack=LONGEST_STACK, layer_version=999999)
    _, description = published(transformed, longest, names)
    assert "${" not in description, description
    assert len(description) <= 256, (len(description), description)
    # The generated parts are there: 13 characters of the table's, the secret's two.
    assert f"table {names['ConversationsTable'].rsplit('-', 1)[1]} " in description
    assert f"queue {LONGEST_STACK}-cancel.fifo " in description


def _parameters_reached(node: Any, template: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    parameters = template["Parameters"]
    if isinstance(node, list):
        for item in node:
            names |= _parameters_reached(item, template)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and value in parameters:
                names.add(value)
            elif key == "Fn::If":
                names |= _parameters_reached(template["Conditions"][value[0]], template)
                names |= _parameters_reached(value[1:], template)
            elif key == "Condition" and isinstance(value, str):
                names |= _parameters_reached(template["Conditions"][value], template)
            else:
                names |= _parameters_reached(value, template)
    elif isinstance(node, str):
        names |= {name for name in parameters if "${" + name + "}" in node}
    return names


def test_the_deploy_guide_names_every_value_that_publishes_a_version(
    transformed: dict[str, Any],
) -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    section = guide.split("## What publishes a new version", 1)[1].split("\n## ", 1)[0]
    description = _description_text(transformed)
    for name in transformed["Parameters"]:
        if "${" + name + "}" in description:
            assert f"`{name}`" in section, name
    assert "AutoPublishAliasAllProperties" in section
