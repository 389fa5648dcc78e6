"""The template transformed once per session by samtranslator, in aws-sam-cli's own venv."""

from __future__ import annotations

from typing import Any

import pytest

from tests.template.support import transform


@pytest.fixture(scope="session")
def transformed() -> dict[str, Any]:
    """template.yaml as CloudFormation receives it after the SAM transform."""
    return transform()
