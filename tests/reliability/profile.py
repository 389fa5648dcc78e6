"""Hypothesis settings for the reliability suites: few examples by default (CI), many in
``make reliability`` (RELIABILITY_FULL=1). No deadlines: nothing here is a timing test.

RELIABILITY_FULL sets how big a run is, not which tests run: tests of the long tier are
marked ``full`` and selected with -m (see pyproject's addopts)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FULL = os.environ.get("RELIABILITY_FULL") == "1"

_COMMON = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
FAST_EXAMPLES = 40
FULL_EXAMPLES = 400

# CI runs the same examples every time (derandomize); the full run explores afresh.
HYPOTHESIS = (
    settings(_COMMON, max_examples=FULL_EXAMPLES)
    if FULL
    else settings(_COMMON, max_examples=FAST_EXAMPLES, derandomize=True)
)
