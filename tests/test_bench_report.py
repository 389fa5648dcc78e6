"""The benchmark's bookkeeping, without running it: how the import breakdown is read, and how
a run's figures become verdicts and tables (``benchmarks.report``)."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import report
from benchmarks.run import IMPORTTIME_MARKER, _importtime_by_package


def test_the_breakdown_counts_only_the_handlers_imports_by_top_level_package() -> None:
    stderr = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       100 |        100 | encodings",
            IMPORTTIME_MARKER,
            "import time: self [us] | cumulative | imported package",
            "import time:       300 |        300 |     botocore.compat",
            "import time:        50 |        350 |   botocore",
            "import time:         7 |          7 |   awscrt",
            "import time:      1000 |       1357 | app",
        ]
    )
    assert _importtime_by_package(stderr) == {"botocore": 350, "awscrt": 7, "app": 1000}


def _figures(**overrides: Any) -> dict[str, Any]:
    calls = {
        "cold_stop_running": ["Secrets Manager.GetSecretValue", "DynamoDB.UpdateItem", "SQS.x"],
        "warm_stop_running": ["DynamoDB.UpdateItem", "SQS.SendMessage"],
        "warm_not_running": ["DynamoDB.UpdateItem"],
        "warm_missing_key": [],
        "warm_wrong_key": ["Secrets Manager.GetSecretValue"],
        "warm_wrong_key_again": [],
    }
    timed = {key: 100.0 for _, key, _ in report.TIMED_ROWS}
    return {
        **timed,
        "cold_init_traced_ms": 100.0,
        "calls": {label: {"status": 200, "calls": names} for label, names in calls.items()},
        "init_peak_rss_mib": 50.0,
        "rss_growth_http_mib": 0.2,
        "warm_count": 20_000,
        "without_bytecode": [],
        "importtime_us": [{"app": 1000, "botocore": 3000, "json": 10}],
        "function_size": (1000, 500),
        "layer_size": None,
        **overrides,
    }


def _report(ours: dict[str, Any]) -> dict[str, Any]:
    return {
        "machine": {"date": "d", "arch": "x86_64", "cpu": "c", "cores": "2", "system": "s"},
        "python": {"version": "3.13.5", "feature": "3.13", "label": "l", "platform": "p"},
        "plan": {"init_runs": 41, "cold_runs": 41, "warm_count": 20_000, "warm_chunk": 250},
        "figures": {"ours": ours, "typical": _figures(), "bare": _figures()},
        "seconds": 480.0,
    }


def test_a_run_within_every_target_meets_them_all() -> None:
    met = report.verdicts(
        _report(_figures(cold_start_ms=80.0, cold_init_ms=70.0, warm_sdk_wall_median_us=30.0))
    )
    assert all(met.values()), met


@pytest.mark.parametrize(
    ("figure", "value", "target"),
    [
        ("cold_start_ms", 81.0, "cold start <= 0.8x"),
        ("cold_init_ms", 81.0, "cold init <= 0.8x"),
        ("warm_sdk_wall_median_us", 31.0, "warm code overhead <= 0.3x"),
        ("without_bytecode", ["app"], "no module without bytecode"),
    ],
)
def test_a_figure_over_its_target_is_missed(figure: str, value: object, target: str) -> None:
    base: dict[str, Any] = {
        "cold_start_ms": 80.0,
        "cold_init_ms": 80.0,
        "warm_sdk_wall_median_us": 30.0,
    }
    run = _report(_figures(**{**base, figure: value}))
    assert report.verdicts(run)[target] is False
    assert "MISSED" in report.table(run)
    assert "missed" in report.runs_table([run])


def test_the_breakdown_names_the_interpreter_and_every_implementation() -> None:
    text = report.import_breakdown([_report(_figures())], stdlib={"json"})
    assert "CPython 3.13.5" in text
    assert "| `botocore` | 3.0 | 3.0 | 3.0 |" in text
    assert "other stdlib modules" in text
