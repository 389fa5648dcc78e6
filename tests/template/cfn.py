"""Evaluates a transformed CloudFormation template under given parameter values, offline.

Conditions are decided, ``Fn::If`` branches chosen, ``AWS::NoValue`` dropped, parameters
substituted, and ``Fn::Join``/``Fn::Split``/``Fn::Select``/``Fn::Sub`` computed; resources'
``Ref`` and ``Fn::GetAtt`` become tokens like ``${CancelQueue.Arn}``, so assertions read as
plain strings, unless ``physical`` gives their deployed values (``{"CancelQueue.QueueName":
...}``, ``{"ConversationsTable": ...}`` for a Ref), as a deployed stack would resolve them.
Resources and outputs whose condition is false are removed, as CloudFormation would.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_NO_VALUE = object()
_SUB_NAME = re.compile(r"\$\{([^}!]+)\}")


def parameter_values(template: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, Any]:
    """Defaults overlaid by ``overrides``; CommaDelimitedList values become lists."""
    values: dict[str, Any] = {}
    for name, spec in template.get("Parameters", {}).items():
        raw = overrides.get(name, spec.get("Default"))
        if raw is None:
            raise KeyError(f"parameter {name} has no default and no value")
        raw = str(raw)
        values[name] = raw.split(",") if spec["Type"] == "CommaDelimitedList" else raw
    unknown = set(overrides) - set(values)
    if unknown:
        raise KeyError(f"unknown parameters {sorted(unknown)}")
    return values


class Evaluator:
    def __init__(
        self,
        template: Mapping[str, Any],
        overrides: Mapping[str, str],
        physical: Mapping[str, str] | None = None,
    ) -> None:
        self.template = template
        self.parameters = parameter_values(template, overrides)
        self.physical = dict(physical or {})
        self._conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            value = self.resolve(self.template["Conditions"][name])
            assert isinstance(value, bool), (name, value)
            self._conditions[name] = value
        return self._conditions[name]

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.resolve(item) for item in node]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, value),) = node.items()
            handler = _FUNCTIONS.get(key)
            if handler is not None:
                return handler(self, value)
        resolved = {key: self.resolve(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not _NO_VALUE}

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        return self.physical.get(name, f"${{{name}}}")

    def get_att(self, value: Any) -> str:
        name = value if isinstance(value, str) else ".".join(value)
        return self.physical.get(name, "${" + name + "}")

    def sub(self, value: Any) -> str:
        text, variables = (value, {}) if isinstance(value, str) else value
        variables = {name: self.resolve(item) for name, item in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name:
                return self.get_att(name)
            resolved = self.ref(name)
            return resolved if isinstance(resolved, str) else ",".join(resolved)

        return _SUB_NAME.sub(replace, text)


def _if(evaluator: Evaluator, value: list[Any]) -> Any:
    name, when_true, when_false = value
    return evaluator.resolve(when_true if evaluator.condition(name) else when_false)


def _join(evaluator: Evaluator, value: list[Any]) -> Any:
    separator, items = value
    parts = evaluator.resolve(items)
    assert all(isinstance(part, str) for part in parts), parts
    return separator.join(parts)


def _split(evaluator: Evaluator, value: list[Any]) -> Any:
    separator, text = value
    resolved = evaluator.resolve(text)
    assert isinstance(resolved, str), resolved
    return resolved.split(separator)


def _select(evaluator: Evaluator, value: list[Any]) -> Any:
    index, items = value
    resolved = evaluator.resolve(items)
    if int(index) < len(resolved):
        return resolved[int(index)]
    # Only a token (no physical value given) can be too short to select from; CloudFormation
    # would fail the deploy on a real value, which tests with physical values would show.
    assert any("${" in str(item) for item in resolved), (index, resolved)
    return "${Select " + str(index) + " of " + ":".join(map(str, resolved)) + "}"


_FUNCTIONS: dict[str, Any] = {
    "Ref": lambda evaluator, name: evaluator.ref(name),
    "Fn::GetAtt": lambda evaluator, value: evaluator.get_att(value),
    "Fn::Select": _select,
    "Fn::Contains": lambda evaluator, value: (
        evaluator.resolve(value[1]) in evaluator.resolve(value[0])
    ),
    "Fn::If": _if,
    "Fn::Join": _join,
    "Fn::Split": _split,
    "Fn::Sub": lambda evaluator, value: evaluator.sub(value),
    "Fn::Equals": lambda evaluator, value: (
        str(evaluator.resolve(value[0])) == str(evaluator.resolve(value[1]))
    ),
    "Fn::Not": lambda evaluator, value: not evaluator.resolve(value[0]),
    "Fn::And": lambda evaluator, value: all(evaluator.resolve(item) for item in value),
    "Fn::Or": lambda evaluator, value: any(evaluator.resolve(item) for item in value),
    "Condition": lambda evaluator, name: evaluator.condition(name),
}


def evaluate(
    template: Mapping[str, Any],
    overrides: Mapping[str, str] | None = None,
    physical: Mapping[str, str] | None = None,
) -> Any:
    """The template as CloudFormation would deploy it with these parameter values (and these
    resources' physical values, when given)."""
    evaluator = Evaluator(template, overrides or {}, physical)
    result: dict[str, Any] = {}
    for section in ("Resources", "Outputs"):
        kept = {
            name: body
            for name, body in template.get(section, {}).items()
            if "Condition" not in body or evaluator.condition(body["Condition"])
        }
        result[section] = evaluator.resolve(kept)
    return result
