"""The benchmark's bookkeeping, without running it: how the import breakdown is read, and how
a run's figures become verdicts and tables (``benchmarks.report``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import report
from benchmarks.artifacts import Artifact
from benchmarks.run import DOCS, IMPORTTIME_MARKER, _environment, _importtime_by_package
from local.fleet.costs import PRICES_AS_OF


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


# --- the confirmed stop (benchmarks.confirmed, rendered by benchmarks.report) -------------


def _confirmed(
    on_ms: list[float], *, confirmation: str = "confirmed", reads: int = 2
) -> dict[str, Any]:
    samples: list[dict[str, Any]] = []
    for n, ms in enumerate(on_ms):
        samples.append(
            {"wait": "off", "conversation_id": f"off-{n}", "ms": 20.0, "reads": 0}
            | {"confirmation": "not-waited", "confirmed_ms": None}
        )
        samples.append(
            {"wait": "on", "conversation_id": f"on-{n}", "ms": ms, "reads": reads}
            | {"confirmation": confirmation, "confirmed_ms": round(ms) - 1}
        )
    return {
        "stops": len(on_ms),
        "warmup_rounds": 2,
        "wait_seconds": 5.0,
        "memory_mb": 512,
        "python": "3.11.9",
        "commit": "abc1234567",
        "samples": samples,
        "route_get_item_calls": {"off": 0, "on": reads * (len(on_ms) + 2)},
        "route_logged_reads": {"off": 0, "on": reads * (len(on_ms) + 2)},
        "machine": {"date": "d", "arch": "x86_64", "cpu": "c", "cores": "2", "system": "s"},
        "seconds": 30.0,
    }


def test_the_quantiles_are_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert report.quantile(values, 0.5) == 50.0
    assert report.quantile(values, 0.99) == 99.0
    assert report.quantile([7.0], 0.99) == 7.0


def test_a_confirmed_run_within_every_target_meets_them_all() -> None:
    result = _confirmed([120.0] * 100)
    figures = report.confirmed_figures(result)
    assert figures["p99_above_ms"] == 100.0
    assert figures["extra_ms_mean"] == 100.0
    # 0.1 s at 0.5 GB at $0.0000133334 per GB-second, a million times.
    assert figures["lambda_usd_per_million"] == pytest.approx(0.66667)
    assert figures["reads_usd_per_million"] == pytest.approx(0.25)
    assert all(report.confirmed_verdicts(figures).values())
    table = report.confirmed_table(result)
    assert "MISSED" not in table
    assert "100 of 100 (100%)" in table
    assert "$0.67" in table
    assert "abc1234567" in table
    assert "--only-confirmed" not in table
    assert "--only-confirmed" in report.confirmed_table(result, alone=True)


@pytest.mark.parametrize(
    ("result", "target"),
    [
        (_confirmed([60.0] * 99 + [500.0, 500.0]), "p99 under 300 ms above"),
        (_confirmed([60.0] * 10, confirmation="unconfirmed"), "100% confirmed"),
        (_confirmed([60.0] * 10, reads=5), "at most 4 extra reads per stop at p50"),
    ],
)
def test_a_confirmed_run_over_a_target_misses_it(result: dict[str, Any], target: str) -> None:
    met = report.confirmed_verdicts(report.confirmed_figures(result))
    assert [label for label, ok in met.items() if not ok] == [
        label for label in met if label.startswith(target)
    ]
    assert "MISSED" in report.confirmed_table(result)


def test_getitem_calls_unlike_the_logged_reads_are_shown_missed() -> None:
    result = _confirmed([60.0] * 10)
    result["route_get_item_calls"] = {"off": 0, "on": 99}
    assert "MISSED" in report.confirmed_table(result)


def test_the_probes_measure_ours_with_the_wait_off() -> None:
    artifact = Artifact("ours", Path("f"), None, Path("r"))
    assert _environment(artifact, {"STOP_WAIT_SECONDS": "5"})["STOP_WAIT_SECONDS"] == "0"


def test_the_docs_have_the_confirmed_stops_section() -> None:
    text = DOCS.read_text("utf-8")
    assert text.count("<!-- bench-confirmed -->") == 1
    assert text.count("<!-- /bench-confirmed -->") == 1


def test_the_confirmed_section_names_its_prices_in_full() -> None:
    table = report.confirmed_table(_confirmed([60.0] * 10))
    assert "$0.0000133334 per GB-second" in table
    assert f"as of {PRICES_AS_OF}" in table
