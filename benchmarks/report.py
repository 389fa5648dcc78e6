"""What ``make bench`` aims at (the targets) and how its figures are shown (the tables).

The targets are data, checked in one place (``verdicts``); the tables only render figures
and verdicts. ``benchmarks.run`` measures and writes them.
"""

from __future__ import annotations

import math
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


# --- the confirmed stop (issue 19) --------------------------------------------------------

CONFIRMED_SHARE = 1.0
"""With the wait on and a healthy worker, every stop answered "confirmed"."""
CONFIRMED_P99_ABOVE_MS = 300.0
"""The wait's answer latency p99 at most this far above the wait-off answer's p99."""
CONFIRMED_READS_P50 = 4
"""Extra reads (GetItem) per stop with the wait on, at p50, at most."""


def quantile(values: list[float], fraction: float) -> float:
    """The nearest-rank quantile: of 100 values, p50 is the 50th smallest, p99 the 99th."""
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(fraction * len(ordered)) - 1)])


def confirmed_figures(result: dict[str, Any]) -> dict[str, Any]:
    """A confirmed-stop run's samples (``benchmarks.confirmed.measure``) as figures."""
    from local.fleet.costs import PRICES

    by_wait = {wait: [s for s in result["samples"] if s["wait"] == wait] for wait in ("off", "on")}
    figures: dict[str, Any] = {}
    for wait, samples in by_wait.items():
        if not samples:
            raise ValueError(f"no stop with the wait {wait}")
        ms = [float(s["ms"]) for s in samples]
        reads = [float(s["reads"]) for s in samples]
        figures[wait] = {
            "stops": len(samples),
            "p50_ms": quantile(ms, 0.5),
            "p99_ms": quantile(ms, 0.99),
            "mean_ms": statistics.fmean(ms),
            "reads_p50": quantile(reads, 0.5),
            "reads_p99": quantile(reads, 0.99),
            "reads_mean": statistics.fmean(reads),
            "confirmations": dict(sorted(_counts(s["confirmation"] for s in samples).items())),
        }
        confirmed_ms = [float(s["confirmed_ms"]) for s in samples if s["confirmed_ms"] is not None]
        figures[wait]["confirmed"] = figures[wait]["confirmations"].get("confirmed", 0)
        figures[wait]["confirmed_ms_p50"] = quantile(confirmed_ms, 0.5) if confirmed_ms else None
        figures[wait]["confirmed_ms_p99"] = quantile(confirmed_ms, 0.99) if confirmed_ms else None
    off, on = figures["off"], figures["on"]
    extra_ms = on["mean_ms"] - off["mean_ms"]
    gigabytes = result["memory_mb"] / 1024
    figures["p50_above_ms"] = on["p50_ms"] - off["p50_ms"]
    figures["p99_above_ms"] = on["p99_ms"] - off["p99_ms"]
    figures["extra_ms_mean"] = extra_ms
    figures["extra_reads_mean"] = on["reads_mean"] - off["reads_mean"]
    figures["lambda_usd_per_million"] = (
        max(extra_ms, 0.0) / 1000 * gigabytes * PRICES["lambda_arm64_gb_second"] * 1e6
    )
    figures["reads_usd_per_million"] = (
        figures["extra_reads_mean"] * PRICES["dynamodb_read_unit"] * 1e6
    )
    return figures


def _counts(values: Any) -> dict[str, int]:
    counted: dict[str, int] = {}
    for value in values:
        counted[str(value)] = counted.get(str(value), 0) + 1
    return counted


def confirmed_verdicts(figures: dict[str, Any]) -> dict[str, bool]:
    """Issue 19's targets for the wait: met or not, by label."""
    on = figures["on"]
    return {
        f"{CONFIRMED_SHARE:.0%} confirmed": on["confirmed"] >= CONFIRMED_SHARE * on["stops"],
        f"p99 under {CONFIRMED_P99_ABOVE_MS:g} ms above the unconfirmed answer": (
            figures["p99_above_ms"] < CONFIRMED_P99_ABOVE_MS
        ),
        f"at most {CONFIRMED_READS_P50} extra reads per stop at p50": (
            on["reads_p50"] - figures["off"]["reads_p50"] <= CONFIRMED_READS_P50
        ),
    }


def _share(part: int, whole: int) -> str:
    return f"{part} of {whole} ({part / whole:.0%})"


def _optional_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def confirmed_table(result: dict[str, Any], *, alone: bool = False) -> str:
    """The confirmed-stop section: wait off against wait on, with the targets' verdicts."""
    from local.fleet.costs import PRICES, PRICES_AS_OF

    f = confirmed_figures(result)
    off, on = f["off"], f["on"]
    met = confirmed_verdicts(f)
    share, p99_label, reads_label = met
    wait = f"{result['wait_seconds']:g}"
    rows: list[tuple[str, ...]] = [
        (
            "answer latency p50 (ms)",
            f"{off['p50_ms']:.1f}",
            f"{on['p50_ms']:.1f}",
            f"+{f['p50_above_ms']:.1f}",
            "",
            "",
        ),
        (
            "answer latency p99 (ms)",
            f"{off['p99_ms']:.1f}",
            f"{on['p99_ms']:.1f}",
            f"+{f['p99_above_ms']:.1f}",
            f"< +{CONFIRMED_P99_ABOVE_MS:g} ms",
            _met(met[p99_label]),
        ),
        (
            "answer latency mean (ms)",
            f"{off['mean_ms']:.1f}",
            f"{on['mean_ms']:.1f}",
            f"+{f['extra_ms_mean']:.1f}",
            "",
            "",
        ),
        (
            "answered `X-Stop-Confirmation: confirmed`",
            _share(off["confirmed"], off["stops"]),
            _share(on["confirmed"], on["stops"]),
            "",
            f"{CONFIRMED_SHARE:.0%}",
            _met(met[share]),
        ),
        (
            "`X-Stop-Confirmation` values",
            _values(off["confirmations"]),
            _values(on["confirmations"]),
            "",
            "",
            "",
        ),
        (
            "request to confirmation, p50 / p99 (`X-Stop-Confirmed-Ms`, ms)",
            f"{_optional_ms(off['confirmed_ms_p50'])} / {_optional_ms(off['confirmed_ms_p99'])}",
            f"{_optional_ms(on['confirmed_ms_p50'])} / {_optional_ms(on['confirmed_ms_p99'])}",
            "",
            "",
            "",
        ),
        (
            "extra reads per stop, p50 (`confirmation_reads`)",
            f"{off['reads_p50']:.0f}",
            f"{on['reads_p50']:.0f}",
            f"+{on['reads_p50'] - off['reads_p50']:.0f}",
            f"<= {CONFIRMED_READS_P50}",
            _met(met[reads_label]),
        ),
        (
            "extra reads per stop, p99 / mean",
            f"{off['reads_p99']:.0f} / {off['reads_mean']:.2f}",
            f"{on['reads_p99']:.0f} / {on['reads_mean']:.2f}",
            "",
            "",
            "",
        ),
    ]
    counted, logged = result["route_get_item_calls"], result["route_logged_reads"]
    rows.append(
        (
            "GetItem calls botocore counted in the route / reads its log lines gave "
            "(every stop, warm-up included)",
            f"{counted['off']} / {logged['off']}",
            f"{counted['on']} / {logged['on']}",
            "",
            "equal",
            _met(counted == logged),
        )
    )
    memory = result["memory_mb"]
    rows += [
        (
            f"Lambda duration added per stop (mean, ms; {memory} MB arm64)",
            "",
            "",
            f"+{f['extra_ms_mean']:.1f}",
            "",
            "",
        ),
        (
            "Lambda cost of the wait per million stops",
            "",
            "",
            f"${f['lambda_usd_per_million']:.2f}",
            "",
            "",
        ),
        (
            "DynamoDB cost of the extra reads per million stops",
            "",
            "",
            f"${f['reads_usd_per_million']:.2f}",
            "",
            "",
        ),
    ]
    header = (
        "figure",
        "wait off (`STOP_WAIT_SECONDS=0`)",
        f"wait on (`STOP_WAIT_SECONDS={wait}`)",
        "on - off",
        "target",
        "",
    )
    m = result["machine"]
    how = (
        "This section alone was written by `python -m benchmarks.run --only-confirmed "
        "--update-docs`, not by a full `make bench` (the tables above come from their own run). "
        if alone
        else ""
    )
    note = (
        f"Measured at commit `{result['commit']}` on {m['date']}: {on['stops']} stops of "
        f"running conversations with the wait on and {off['stops']} with it off, one at a "
        f"time, the two interleaved, after {result['warmup_rounds']} warm-up rounds not "
        f"counted; each conversation registered and started by one real worker process "
        f"(`local/fleet/host.py`: a `Worker` with `WORKER_QUEUE_PREFIX` set, its default "
        f"settings); moto's server, and the route on uvicorn in a process per setting, "
        f"CPython {result['python']} (the dev venv's); latency at the client over a "
        f"keep-alive connection on 127.0.0.1. Machine: {m['arch']}, {m['cpu']}, "
        f"{m['cores']} cores. p50 and p99 are nearest-rank (of 100 stops, p99 is the "
        f"slowest but one; of fewer than 100, the slowest). {how}Costs: the mean added "
        "duration at the function's "
        f"MemorySize ({memory} MB, template.yaml) at "
        f"${PRICES['lambda_arm64_gb_second']:.10f} per GB-second (Lambda arm64), the extra "
        "strongly consistent reads at "
        f"${PRICES['dynamodb_read_unit'] * 1e6:g} per million read units; AWS on-demand "
        f"list prices, us-east-1, as of {PRICES_AS_OF} (`local/fleet/costs.py`, where every "
        "price lives); Lambda's rounding of each invocation up to the millisecond and free "
        "tiers ignored. The request charge is the same either way."
    )
    return "\n".join([*_markdown(header, rows), "", note])


def _values(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())
