"""The tiers: plain pytest leaves out the sam_build and full tiers; -m brings them back
(`make test` runs `-m "not full"`, `make reliability` adds the full tier)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

from local.emulation import ROOT
from tests.support import DEFAULT_TIERS

TIERS = ("sam_build", "full")


def test_the_default_selection_is_the_one_pyproject_gives() -> None:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["pytest"]
    assert f'-m "{DEFAULT_TIERS}"' in options["ini_options"]["addopts"]
    registered = {line.split(":")[0] for line in options["ini_options"]["markers"]}
    assert set(TIERS) <= registered


def _selected(*args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode in (0, 5), result.stdout + result.stderr  # 5: none selected
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_the_sam_build_runs_only_when_selected() -> None:
    build = "tests/template/test_build.py"
    assert _selected(build) == []
    assert _selected(build, "-m", "not full") != []
