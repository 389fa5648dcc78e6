"""The tiers: plain pytest leaves out the sam_build and full tiers; -m, or the variables that
selected them before the markers (SAM_BUILD_TEST, RELIABILITY_FULL), bring them back."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

from local.emulation import ROOT
from tests.support import DEFAULT_TIERS, TIER_SWITCHES, tier_selection


def test_the_default_selection_is_the_one_pyproject_gives() -> None:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["pytest"]
    assert f'-m "{DEFAULT_TIERS}"' in options["ini_options"]["addopts"]
    registered = {line.split(":")[0] for line in options["ini_options"]["markers"]}
    assert set(TIER_SWITCHES) <= registered


@pytest.mark.parametrize(
    ("environ", "selection"),
    [
        ({}, "not sam_build and not full"),
        ({"SAM_BUILD_TEST": "1"}, "not full"),
        ({"RELIABILITY_FULL": "1"}, "not sam_build"),
        ({"RELIABILITY_FULL": "0"}, "not sam_build and not full"),
        ({"SAM_BUILD_TEST": "1", "RELIABILITY_FULL": "1"}, ""),
    ],
)
def test_the_old_variables_add_their_tier_to_the_default(
    environ: dict[str, str], selection: str
) -> None:
    assert tier_selection(DEFAULT_TIERS, environ) == selection


def test_a_selection_of_ones_own_wins_over_the_old_variables() -> None:
    environ = {"SAM_BUILD_TEST": "1", "RELIABILITY_FULL": "1"}
    assert tier_selection("not full", environ) == "not full"
    assert tier_selection("slow", environ) == "slow"


def _selected(*args: str, **environ: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in TIER_SWITCHES.values()}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env={**env, **environ},
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
    by_variable = _selected(build, SAM_BUILD_TEST="1")
    assert by_variable != []
    assert _selected(build, "-m", "not full") == by_variable
