"""The worker installs with the ``worker`` extra alone: none of the Lambda's web stack."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import openhands_stop.worker.__main__
loaded = sorted(m for m in ("fastapi", "mangum", "aws_lambda_powertools", "starlette")
                if m in sys.modules)
print(",".join(loaded))
"""


def test_the_worker_imports_none_of_the_api_dependencies() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
