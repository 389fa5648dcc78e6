"""What ``make bench`` aims at (the targets) and how its figures are shown (the tables).

The targets are data, checked in one place (``verdicts``); the tables only render figures
and verdicts. ``benchmarks.run`` measures and writes them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

NAMES = {"ours": "ours", "typical": "typical template", "bare": "bare handler"}
IMPLEMENTATIONS = ("ours", "typical", "bare")


@dataclass(frozen=True)
class RatioTarget:
    """Ours at most ``limit`` times the typical template's figure ``key``."""

    key: str
    limit: float
    name: str


@dataclass(frozen=True)
class CallTarget:
    """Exactly ``count`` AWS calls (of ``service`` only, if given) for a kind of request."""

    key: str
    count: int
    service: str | None = None


RATIO_TARGETS = (
    RatioTarget("cold_start_ms", 0.8, "cold start"),
    RatioTarget("cold_init_ms", 0.8, "cold init"),
    RatioTarget("warm_sdk_wall_median_us", 0.3, "warm code overhead"),
)
CALL_TARGETS = (
    CallTarget("warm_stop_running", 2),
    CallTarget("warm_not_running", 1),
    CallTarget("warm_missing_key", 0),
    CallTarget("warm_wrong_key_again", 0),
    CallTarget("warm_stop_running", 0, "secrets"),
)
RSS_GROWTH_LIMIT_MB = 2.0
"""Resident-set growth over the warm requests, in MB (10^6 bytes)."""


def calls(figures: dict[str, Any], label: str, service: str | None = None) -> int:
    names = figures["calls"][label]["calls"]
    return sum(1 for n in names if service is None or n.startswith(service))


def ratio(report: dict[str, Any], key: str) -> float:
    f = report["figures"]
    return float(f["ours"][key] / f["typical"][key])


def verdicts(report: dict[str, Any]) -> dict[str, bool]:
    """Every target of the run: met or not, by the target's label."""
    ours = report["figures"]["ours"]
    met = {f"{t.name} <= {t.limit}x": ratio(report, t.key) <= t.limit for t in RATIO_TARGETS}
    for c in CALL_TARGETS:
        met[_call_label(c)] = calls(ours, c.key, c.service) == c.count
    growth_mb = ours["rss_growth_http_mib"] * 1.048576
    met[f"RSS growth < {RSS_GROWTH_LIMIT_MB:g} MB"] = growth_mb < RSS_GROWTH_LIMIT_MB
    met["no module without bytecode"] = not any(
        report["figures"][name].get("without_bytecode") for name in IMPLEMENTATIONS
    )
    return met


def _call_label(target: CallTarget) -> str:
    what = "Secrets Manager calls" if target.service == "secrets" else "AWS calls"
    return f"{what}, {target.key} = {target.count}"


# The table's timed rows: (label, figure key, unit). Targets come from RATIO_TARGETS.
TIMED_ROWS = (
    ("cold init: import + ready", "cold_init_ms", "ms"),
    ("cold init, CPU time", "cold_init_cpu_ms", "ms"),
    ("cold init, fastest process", "cold_init_fastest_ms", "ms"),
    ("cold start: import + first real stop, moto on loopback", "cold_start_ms", "ms"),
    ("cold start, fastest process", "cold_start_fastest_ms", "ms"),
    ("first request, AWS stubbed at HTTP", "first_request_http_ms", "ms"),
    (
        "warm request median, AWS stubbed at HTTP (SDK work included)",
        "warm_http_wall_median_us",
        "us",
    ),
    ("warm request p99, AWS stubbed at HTTP", "warm_http_wall_p99_us", "us"),
    ("warm request CPU median, AWS stubbed at HTTP", "warm_http_cpu_median_us", "us"),
    ("warm code overhead median: AWS stubbed at the SDK call", "warm_sdk_wall_median_us", "us"),
    ("warm code overhead p99: AWS stubbed at the SDK call", "warm_sdk_wall_p99_us", "us"),
    (
        "warm code overhead CPU median: AWS stubbed at the SDK call",
        "warm_sdk_cpu_median_us",
        "us",
    ),
)
CALL_ROWS = (
    ("AWS calls: stop of a running conversation (cold)", "cold_stop_running", None),
    ("AWS calls: stop of a running conversation (warm)", "warm_stop_running", None),
    ("AWS calls: not running (warm)", "warm_not_running", None),
    ("AWS calls: no key (warm)", "warm_missing_key", None),
    ("AWS calls: wrong key, first one (warm)", "warm_wrong_key", None),
    ("AWS calls: wrong key, again (warm)", "warm_wrong_key_again", None),
    ("Secrets Manager calls on a warm stop", "warm_stop_running", "secrets"),
)


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.2f}" if n >= 100_000 else f"{n / 1_000_000:.4f}"


def _markdown(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def table(report: dict[str, Any]) -> str:
    """The run's figures, ours against both peers, with each target's verdict."""
    f = report["figures"]
    ours, typ, bare = (f[name] for name in IMPLEMENTATIONS)
    limits = {t.key: t.limit for t in RATIO_TARGETS}
    rows: list[tuple[str, ...]] = []

    def timed(label: str, key: str, unit: str) -> None:
        shown = [f"{x[key]:.1f}" if unit == "ms" else f"{x[key]:.0f}" for x in (ours, typ, bare)]
        to_typical = ours[key] / typ[key]
        limit = limits.get(key)
        target = "" if limit is None else f"<= {limit}x"
        verdict = "" if limit is None else _met(to_typical <= limit)
        to_bare = f"{ours[key] / bare[key]:.2f}x"
        rows.append((f"{label} ({unit})", *shown, f"{to_typical:.2f}x", to_bare, target, verdict))

    for label, key, unit in TIMED_ROWS:
        if key not in ours:
            continue
        timed(label, key, unit)
        if key == "cold_init_cpu_ms":
            traced = ours["cold_init_traced_ms"]
            rows.append(
                (
                    "cold init, ours with X-Ray tracing on (ms)",
                    f"{traced:.1f}",
                    "-",
                    "-",
                    f"{traced / typ['cold_init_ms']:.2f}x",
                    "",
                    "",
                    "",
                )
            )

    wanted = {(c.key, c.service): c.count for c in CALL_TARGETS}
    for label, key, service in CALL_ROWS:
        got = [calls(x, key, service) for x in (ours, typ, bare)]
        want = wanted.get((key, service))
        target = "" if want is None else f"= {want}"
        verdict = "" if want is None else _met(got[0] == want)
        rows.append((label, *map(str, got), "", "", target, verdict))

    unloaded = [len(x["without_bytecode"]) for x in (ours, typ, bare)]
    rows.append(
        (
            "modules of the artifact not loaded from its bytecode",
            *map(str, unloaded),
            "",
            "",
            "= 0",
            _met(not any(unloaded)),
        )
    )
    rss = [x["init_peak_rss_mib"] for x in (ours, typ, bare)]
    to_typical, to_bare = f"{rss[0] / rss[1]:.2f}x", f"{rss[0] / rss[2]:.2f}x"
    rows.append(
        ("peak RSS after init (MiB)", *(f"{v:.1f}" for v in rss), to_typical, to_bare, "", "")
    )
    growth = [x["rss_growth_http_mib"] for x in (ours, typ, bare)]
    rows.append(
        (
            f"RSS growth over {ours['warm_count']:,} warm requests (MiB)",
            *(f"{v:.2f}" for v in growth),
            "",
            "",
            f"< {RSS_GROWTH_LIMIT_MB:g} MB",
            _met(growth[0] * 1.048576 < RSS_GROWTH_LIMIT_MB),
        )
    )
    for label, key in (("function package", "function_size"), ("layer", "layer_size")):
        for index, kind in ((0, "unzipped"), (1, "zipped")):
            values = [_mb(x[key][index]) if x[key] else "-" for x in (ours, typ, bare)]
            rows.append((f"{label}, {kind} (MB)", *values, "", "", "", ""))
    total = [
        x["function_size"][1] + (x["layer_size"][1] if x["layer_size"] else 0)
        for x in (ours, typ, bare)
    ]
    rows.append(
        (
            "everything deployed, zipped (MB)",
            *(_mb(t) for t in total),
            f"{total[0] / total[1]:.2f}x",
            "",
            "",
            "",
        )
    )
    header = ("figure", *(NAMES[n] for n in IMPLEMENTATIONS), "ours/typical", "ours/bare")
    lines = _markdown((*header, "target", ""), rows)
    return "\n".join([*lines, "", context(report)])


def context(report: dict[str, Any]) -> str:
    m, plan, python = report["machine"], report["plan"], report["python"]
    return (
        f"Run on {m['date']}. Interpreter: CPython {python['version']}, {python['label']}; "
        f"every artifact built for it (cp{python['feature'].replace('.', '')} "
        f"{python['platform']} wheels) and loading the bytecode it compiled. Machine: "
        f"{m['arch']}, {m['cpu']}, {m['cores']} cores, {m['system']}. "
        f"Medians of {plan['init_runs']} fresh processes (init), "
        f"{plan['cold_runs']} (cold start), {plan['warm_count']:,} warm requests each in "
        f"turns of {plan['warm_chunk']}; the implementations interleaved."
    )


def runs_table(reports: list[dict[str, Any]]) -> str:
    """Consecutive full runs: the targeted ratios of each, and whether every target was met."""
    header = (
        "run",
        "interpreter",
        *(f"{t.name} (<= {t.limit}x)" for t in RATIO_TARGETS),
        "fastest processes: cold init, cold start",
        "other targets",
        "took",
    )
    rows = []
    for number, report in enumerate(reports, 1):
        met = verdicts(report)
        ratios = []
        for t in RATIO_TARGETS:
            r = ratio(report, t.key)
            ratios.append(f"{r:.2f}x" + ("" if r <= t.limit else " (missed)"))
        others = [label for label, ok in met.items() if not ok and "<= " not in label]
        rows.append(
            (
                str(number),
                f"CPython {report['python']['version']}",
                *ratios,
                _fastest(report),
                "all met" if not others else "missed: " + ", ".join(others),
                f"{report['seconds'] / 60:.1f} min",
            )
        )
    return "\n".join(_markdown(header, rows))


def _fastest(report: dict[str, Any]) -> str:
    """The ratios of the fastest process of each implementation: contention only ever adds
    time, so these show what the code costs underneath a noisy run's medians."""
    if "cold_init_fastest_ms" not in report["figures"]["ours"]:
        return "-"
    init, start = (ratio(report, key) for key in ("cold_init_fastest_ms", "cold_start_fastest_ms"))
    return f"{init:.2f}x, {start:.2f}x"


# --- the import breakdown ---------------------------------------------------------------

HANDLER_MODULE = "app"
BREAKDOWN_MIN_MS = 2.0
"""Packages under this (self time, in every implementation) share one row."""


def import_breakdown(reports: list[dict[str, Any]], stdlib: set[str]) -> str:
    """Self time of every import under ``-X importtime``, summed by top-level package: the
    median over the processes of every run given."""
    per_package: dict[str, dict[str, float]] = {}
    totals: dict[str, float] = {}
    for name in IMPLEMENTATIONS:
        samples = [s for r in reports for s in r["figures"][name]["importtime_us"]]
        packages = {p for sample in samples for p in sample}
        for package in packages:
            median_us = statistics.median(sample.get(package, 0) for sample in samples)
            per_package.setdefault(package, {})[name] = median_us / 1000
        totals[name] = statistics.median(sum(sample.values()) for sample in samples) / 1000
    big = {p: v for p, v in per_package.items() if max(v.values(), default=0) >= BREAKDOWN_MIN_MS}
    rest_std = dict.fromkeys(IMPLEMENTATIONS, 0.0)
    rest_other = dict.fromkeys(IMPLEMENTATIONS, 0.0)
    for package, values in per_package.items():
        if package in big:
            continue
        bucket = rest_std if package in stdlib else rest_other
        for name, ms in values.items():
            bucket[name] += ms

    def label(package: str) -> str:
        if package == HANDLER_MODULE:
            return "`app`: the handler module's own code (for ours: building clients and app)"
        return f"`{package}`" + (" (stdlib)" if package in stdlib else "")

    ordered = sorted(big, key=lambda p: -(big[p].get("ours", 0) + big[p].get("typical", 0)))
    rows = []
    for package in ordered:
        values = big[package]
        rows.append((label(package), *(_ms(values.get(n)) for n in IMPLEMENTATIONS)))
    rows.append(
        (f"other stdlib modules (each < {BREAKDOWN_MIN_MS:g} ms)", *map(_ms, rest_std.values()))
    )
    rows.append(
        (f"other packages (each < {BREAKDOWN_MIN_MS:g} ms)", *map(_ms, rest_other.values()))
    )
    rows.append(("**total (median of the sums)**", *(_ms(totals[n]) for n in IMPLEMENTATIONS)))
    header = ("top-level package (self time, ms)", *(NAMES[n] for n in IMPLEMENTATIONS))
    count = len(reports[0]["figures"]["ours"]["importtime_us"]) * len(reports)
    python = reports[0]["python"]["version"]
    note = (
        f"CPython {python}, `-X importtime`, {count} fresh process{'es' * (count > 1)} per "
        "implementation "
        "(interleaved); the median of each package's summed self time. `-X importtime` "
        "itself slows imports down: compare rows, not totals with the tables above."
    )
    return "\n".join([*_markdown(header, rows), "", note])


def _ms(value: float | None) -> str:
    return "-" if not value else f"{value:.1f}"
