"""Transforms template.yaml offline with samtranslator, as CloudFormation would: run with
aws-sam-cli's venv (its pinned samtranslator), not the app's. Prints the JSON template.

Usage: .venv-sam/bin/python tests/template/transform.py template.yaml [Name=Value ...]
Code locations become ``s3://`` URIs (no build, no upload); region and dummy credentials
come from the caller's environment, so nothing touches the network.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from samtranslator.parser.parser import Parser  # type: ignore[import-not-found]
from samtranslator.translator.translator import Translator  # type: ignore[import-not-found]
from samtranslator.yaml_helper import yaml_parse  # type: ignore[import-not-found]

CODE_PROPERTIES = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
}


def transform(template_path: Path, parameters: dict[str, str]) -> dict[str, Any]:
    template: dict[str, Any] = yaml_parse(template_path.read_text())
    for name, resource in template.get("Resources", {}).items():
        code_property = CODE_PROPERTIES.get(resource.get("Type"))
        if code_property:
            resource["Properties"][code_property] = f"s3://artifacts/{name}.zip"
    translated: dict[str, Any] = Translator(managed_policy_map={}, sam_parser=Parser()).translate(
        sam_template=template, parameter_values=parameters
    )
    return translated


if __name__ == "__main__":
    path, *pairs = sys.argv[1:]
    overrides = dict(pair.split("=", 1) for pair in pairs)
    json.dump(transform(Path(path), overrides), sys.stdout, indent=1, sort_keys=True)
