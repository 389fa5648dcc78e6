"""Transforms template.yaml offline with samtranslator, as CloudFormation would: run with
aws-sam-cli's venv (its pinned samtranslator), not the app's. Prints the JSON template.

Usage: .venv-sam/bin/python tests/template/transform.py template.yaml [Name=Value ...]
    [--code Resource=s3://bucket/key ...]
Code locations become ``s3://`` URIs (no build, no upload), ``s3://artifacts/<Resource>.zip``
unless ``--code`` names another (as a rebuilt artifact would upload under a new key); region
and dummy credentials come from the caller's environment, so nothing touches the network.
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


def transform(
    template_path: Path, parameters: dict[str, str], code: dict[str, str] | None = None
) -> dict[str, Any]:
    template: dict[str, Any] = yaml_parse(template_path.read_text())
    for name, resource in template.get("Resources", {}).items():
        code_property = CODE_PROPERTIES.get(resource.get("Type"))
        if code_property:
            uri = (code or {}).get(name, f"s3://artifacts/{name}.zip")
            resource["Properties"][code_property] = uri
    translated: dict[str, Any] = Translator(managed_policy_map={}, sam_parser=Parser()).translate(
        sam_template=template, parameter_values=parameters
    )
    return translated


if __name__ == "__main__":
    path, *args = sys.argv[1:]
    codes = [args[i + 1] for i, arg in enumerate(args) if arg == "--code"]
    pairs = [arg for i, arg in enumerate(args) if arg != "--code" and args[i - 1 : i] != ["--code"]]
    overrides = dict(pair.split("=", 1) for pair in pairs)
    code = dict(pair.split("=", 1) for pair in codes)
    json.dump(transform(Path(path), overrides, code), sys.stdout, indent=1, sort_keys=True)
