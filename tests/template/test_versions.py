"""The `live` alias follows every change of what runs: the layer, the function, the settings.

The API invokes `live`. A deploy that changes what runs but publishes no version leaves
`live` on the old code while `sam deploy` reports success. A version is published when the
transformed template holds a Version resource with a new logical id (a new resource) or a
new Description (which CloudFormation cannot update in place: it replaces the version).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.template.cfn import evaluate
from tests.template.support import ROOT, transform

VERSION = "AWS::Lambda::Version"


def published(transformed: dict[str, Any], parameters: dict[str, str] | None = None) -> Any:
    """What identifies the published version: its logical id and its evaluated Description."""
    deployed = evaluate(transformed, parameters)
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
    before, after = published(transformed), published(rebuilt)
    assert before[0] != after[0], "the version's logical id follows the layer's content"
    assert before[1] != after[1], "and its description names the new layer"


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
    (version,) = [b for b in transformed["Resources"].values() if b["Type"] == VERSION]
    description = version["Properties"]["Description"]["Fn::Sub"]
    for name in sorted(reached):
        assert "${" + name + "}" in description, name


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
    _, description = published(transformed, longest)
    layer_token = next(part for part in description.split() if part.startswith("${"))
    longest_layer_arn = (
        "arn:aws-iso-b:lambda:ap-southeast-2:123456789012:layer:DependenciesLayer:99999"
    )
    assert len(description.replace(layer_token.rstrip(";"), longest_layer_arn)) <= 256


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
    (version,) = [b for b in transformed["Resources"].values() if b["Type"] == VERSION]
    description = version["Properties"]["Description"]["Fn::Sub"]
    for name in transformed["Parameters"]:
        if "${" + name + "}" in description:
            assert f"`{name}`" in section, name
    assert "AutoPublishAliasAllProperties" in section
