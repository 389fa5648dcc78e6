"""``make bench``: our stop function against two peers, side by side, in one table.

Every figure comes from fresh interpreters running the packaged artifacts (see
``benchmarks.artifacts``) with bytecode writes disabled, as Lambda runs them. The three
implementations are interleaved (ours, typical, bare, ours, ...) so that load from whatever
else shares the machine falls on all of them alike; figures are medians.

``--smoke`` runs every measurement a few times only: it checks the benchmark works, not
that a target is met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.artifacts import CACHE, Artifact, build, size
from local.emulation import (
    AWS_DUMMY_ENV,
    DEMO_SESSION_KEY,
    OFFLINE_FUNCTION_ENV,
    Stack,
    create_stack,
    moto_server,
    seed,
)

PROBE = Path(__file__).resolve().parent / "probe.py"
DOCS = Path(__file__).resolve().parent.parent / "README.md"
NAMES = {"ours": "ours", "typical": "typical template", "bare": "bare handler"}
# Where a stubbed run's AWS calls would go if the stub ever let one through: nothing listens.
NOWHERE = "http://127.0.0.1:9"


@dataclass(frozen=True)
class Plan:
    init_runs: int
    cold_runs: int
    warm_count: int
    warm_chunk: int


FULL = Plan(init_runs=41, cold_runs=41, warm_count=20_000, warm_chunk=250)
SMOKE = Plan(init_runs=2, cold_runs=1, warm_count=200, warm_chunk=100)


def _command(artifact: Artifact, mode: str, result_file: Path, *args: str) -> list[str]:
    """-B (no bytecode writes), -S (no site: the dev venv's packages stay out), -P (the
    probe's folder stays off sys.path); PYTHONPATH is the artifact's."""
    return [sys.executable, "-B", "-S", "-P", str(PROBE), mode, str(result_file), *args]


def _environment(artifact: Artifact, env: dict[str, str]) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join(str(p) for p in artifact.path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "BENCH_SESSION_KEY": DEMO_SESSION_KEY,
        **AWS_DUMMY_ENV,
        **env,
    }


def _result_file() -> Path:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        return Path(handle.name)


def _read_result(result_file: Path) -> dict[str, Any]:
    try:
        result: dict[str, Any] = json.loads(result_file.read_text("utf-8"))
        return result
    finally:
        result_file.unlink(missing_ok=True)


def _probe(artifact: Artifact, mode: str, env: dict[str, str], *args: str) -> dict[str, Any]:
    """One measurement in one fresh interpreter."""
    result_file = _result_file()
    completed = subprocess.run(
        _command(artifact, mode, result_file, *args),
        env=_environment(artifact, env),
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        result_file.unlink(missing_ok=True)
        raise RuntimeError(
            f"{artifact.name} {mode} failed ({completed.returncode}):\n{completed.stderr}"
        )
    return _read_result(result_file)


def _warm_lockstep(
    artifacts: list[Artifact], env: dict[str, str], level: str, count: int, chunk: int
) -> dict[str, dict[str, Any]]:
    """One warm process per implementation, all alive at once, taking turns ``chunk``
    requests at a time until each has served ``count``: load falls on all of them alike."""
    running: list[tuple[Artifact, subprocess.Popen[str], Path]] = []
    try:
        for artifact in artifacts:  # started one after another: inits do not overlap
            result_file = _result_file()
            process = subprocess.Popen(
                _command(artifact, "warm", result_file, level, str(count)),
                env=_environment(artifact, env),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            running.append((artifact, process, result_file))
            _expect(process, "ready", artifact)
        served = 0
        while served < count:
            step = min(chunk, count - served)
            for artifact, process, _ in running:
                assert process.stdin is not None
                process.stdin.write(f"{step}\n")
                process.stdin.flush()
                _expect(process, "ok", artifact)
            served += step
        results: dict[str, dict[str, Any]] = {}
        for artifact, process, result_file in running:
            assert process.stdin is not None
            process.stdin.close()
            if process.wait() != 0:
                raise RuntimeError(f"{artifact.name} warm exited with {process.returncode}")
            results[artifact.name] = _read_result(result_file)
        return results
    finally:
        for _, process, result_file in running:
            if process.poll() is None:
                process.kill()
                process.wait()
            result_file.unlink(missing_ok=True)


def _expect(process: subprocess.Popen[str], word: str, artifact: Artifact) -> None:
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != word:
        process.kill()
        raise RuntimeError(f"{artifact.name} warm: expected {word!r}, got {line!r}")


def _interleaved(
    artifacts: list[Artifact], runs: int, one: Callable[[Artifact, int], dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {a.name: [] for a in artifacts}
    for i in range(runs):
        for artifact in artifacts:
            results[artifact.name].append(one(artifact, i))
    return results


@contextmanager
def _aws() -> Iterator[Stack]:
    with moto_server() as endpoint:
        yield create_stack(endpoint, suffix=f"-bench-{uuid.uuid4().hex[:6]}")


def _percentile(samples: list[int], fraction: float) -> float:
    ordered = sorted(samples)
    return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])


def measure(plan: Plan) -> dict[str, Any]:
    artifacts = build()
    figures: dict[str, dict[str, Any]] = {a.name: {} for a in artifacts}

    with _aws() as stack:
        env = stack.function_environment()

        def cold(artifact: Artifact, i: int) -> dict[str, Any]:
            conversation_id = f"cold-{artifact.name}-{i}-{uuid.uuid4().hex[:6]}"
            seed(stack, {conversation_id: "RUNNING"})
            result = _probe(artifact, "cold", env, conversation_id)
            if result["status"] != 200 or "stopped successfully" not in result["body"]:
                raise RuntimeError(f"{artifact.name}: a cold stop answered {result}")
            return result

        def calls(artifact: Artifact, _: int) -> dict[str, Any]:
            ids = [f"calls-{artifact.name}-{n}-{uuid.uuid4().hex[:6]}" for n in range(3)]
            seed(stack, {ids[0]: "RUNNING", ids[1]: "RUNNING", ids[2]: "STOPPED"})
            return _probe(artifact, "calls", env, *ids)

        for name, runs in _interleaved(artifacts, plan.cold_runs, cold).items():
            figures[name]["cold_start_ms"] = statistics.median(
                1000 * (r["import_s"] + r["first_s"]) for r in runs
            )
            figures[name]["cold_import_ms_loopback"] = statistics.median(
                1000 * r["import_s"] for r in runs
            )
        for name, runs in _interleaved(artifacts, 1, calls).items():
            figures[name]["calls"] = runs[0]["counts"]

    stub_env = {**OFFLINE_FUNCTION_ENV, "AWS_ENDPOINT_URL": NOWHERE}

    # A fourth process per round: ours with X-Ray tracing on (the template's EnableTracing),
    # which loads the X-Ray SDK and patches botocore at init.
    traced_env = {**stub_env, "POWERTOOLS_TRACE_DISABLED": "false"}
    traced_runs: list[dict[str, Any]] = []

    def init(artifact: Artifact, _: int) -> dict[str, Any]:
        result = _probe(artifact, "init", stub_env)
        if artifact.name == "ours":
            traced_runs.append(_probe(artifact, "init", traced_env))
        return result

    for name, runs in _interleaved(artifacts, plan.init_runs, init).items():
        figures[name]["cold_init_ms"] = statistics.median(1000 * r["import_s"] for r in runs)
        figures[name]["cold_init_cpu_ms"] = statistics.median(
            1000 * r["import_cpu_s"] for r in runs
        )
        figures[name]["init_peak_rss_mib"] = statistics.median(
            r["peak_rss_kib"] / 1024 for r in runs
        )
    figures["ours"]["cold_init_traced_ms"] = statistics.median(
        1000 * r["import_s"] for r in traced_runs
    )
    for level in ("http", "sdk"):
        warm = _warm_lockstep(artifacts, stub_env, level, plan.warm_count, plan.warm_chunk)
        for name, result in warm.items():
            if result["status"] != 200:
                raise RuntimeError(f"{name}: a stubbed stop answered {result}")
            figures[name][f"first_request_{level}_ms"] = 1000 * result["first_s"]
            for clock in ("wall", "cpu"):
                samples = result[f"warm_{clock}_ns"]
                figures[name][f"warm_{level}_{clock}_median_us"] = statistics.median(samples) / 1000
                figures[name][f"warm_{level}_{clock}_p99_us"] = _percentile(samples, 0.99) / 1000
            figures[name][f"rss_growth_{level}_mib"] = result["rss_growth_kib"] / 1024
            figures[name]["warm_count"] = plan.warm_count

    for artifact in artifacts:
        function = size(artifact.function)
        layer = size(artifact.layer, zip_root=artifact.layer.parent) if artifact.layer else None
        figures[artifact.name]["function_size"] = function
        figures[artifact.name]["layer_size"] = layer
    return {"machine": machine(), "plan": plan.__dict__, "figures": figures}


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text("utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "arch": platform.machine(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def _calls(counts: dict[str, Any], label: str, service: str | None = None) -> int:
    names = counts[label]["calls"]
    return sum(1 for n in names if service is None or n.startswith(service))


def table(report: dict[str, Any]) -> str:
    f = report["figures"]
    ours, typ, bare = f["ours"], f["typical"], f["bare"]

    def ratio(key: str) -> tuple[str, str]:
        return (f"{ours[key] / typ[key]:.2f}x", f"{ours[key] / bare[key]:.2f}x")

    def mb(n: int) -> str:
        return f"{n / 1_000_000:.2f}" if n >= 100_000 else f"{n / 1_000_000:.4f}"

    rows: list[tuple[str, ...]] = []

    def timed(label: str, key: str, unit: str, target: str, limit: float | None) -> None:
        to_typical, to_bare = ratio(key)
        met = "" if limit is None else ("met" if ours[key] / typ[key] <= limit else "MISSED")
        rows.append(
            (
                f"{label} ({unit})",
                *(f"{x[key]:.1f}" if unit == "ms" else f"{x[key]:.0f}" for x in (ours, typ, bare)),
                to_typical,
                to_bare,
                target,
                met,
            )
        )

    timed("cold init: import + ready", "cold_init_ms", "ms", "<= 1.0x", 1.0)
    timed("cold init, CPU time", "cold_init_cpu_ms", "ms", "", None)
    traced = ours["cold_init_traced_ms"]
    rows.append(("cold init, ours with X-Ray tracing on (ms)", f"{traced:.1f}", "-", "-",
                 f"{traced / typ['cold_init_ms']:.2f}x", "", "", ""))  # fmt: skip
    timed("cold start: import + first real stop, moto on loopback", "cold_start_ms", "ms",
          "<= 0.9x", 0.9)  # fmt: skip
    timed("first request, AWS stubbed at HTTP", "first_request_http_ms", "ms", "", None)
    timed("warm request median, AWS stubbed at HTTP (SDK work included)",
          "warm_http_wall_median_us", "us", "", None)  # fmt: skip
    timed("warm request p99, AWS stubbed at HTTP", "warm_http_wall_p99_us", "us", "", None)
    timed("warm request CPU median, AWS stubbed at HTTP", "warm_http_cpu_median_us", "us", "",
          None)  # fmt: skip
    timed("warm code overhead median: AWS stubbed at the SDK call", "warm_sdk_wall_median_us",
          "us", "<= 0.3x", 0.3)  # fmt: skip
    timed("warm code overhead p99: AWS stubbed at the SDK call", "warm_sdk_wall_p99_us", "us",
          "", None)  # fmt: skip
    timed("warm code overhead CPU median: AWS stubbed at the SDK call",
          "warm_sdk_cpu_median_us", "us", "", None)  # fmt: skip

    call_rows = [
        ("AWS calls: stop of a running conversation (cold)", "cold_stop_running", None, None),
        ("AWS calls: stop of a running conversation (warm)", "warm_stop_running", None, 2),
        ("AWS calls: not running (warm)", "warm_not_running", None, 1),
        ("AWS calls: no key (warm)", "warm_missing_key", None, 0),
        ("AWS calls: wrong key, first one (warm)", "warm_wrong_key", None, None),
        ("AWS calls: wrong key, again (warm)", "warm_wrong_key_again", None, 0),
        ("Secrets Manager calls on a warm stop", "warm_stop_running", "secrets", 0),
    ]
    for label, key, service, want in call_rows:
        got = [_calls(x["calls"], key, service) for x in (ours, typ, bare)]
        met = "" if want is None else ("met" if got[0] == want else "MISSED")
        rows.append((label, *map(str, got), "", "", "" if want is None else f"= {want}", met))

    rss = [x["init_peak_rss_mib"] for x in (ours, typ, bare)]
    rows.append(("peak RSS after init (MiB)", *(f"{v:.1f}" for v in rss),
                 f"{rss[0] / rss[1]:.2f}x", f"{rss[0] / rss[2]:.2f}x", "", ""))  # fmt: skip
    growth = [x["rss_growth_http_mib"] for x in (ours, typ, bare)]
    count = ours["warm_count"]
    rows.append(
        (
            f"RSS growth over {count:,} warm requests (MiB)",
            *(f"{v:.2f}" for v in growth),
            "",
            "",
            "< 2 MB",
            "met" if growth[0] * 1.048576 < 2 else "MISSED",
        )
    )
    for label, key in (("function package", "function_size"), ("layer", "layer_size")):
        for index, kind in ((0, "unzipped"), (1, "zipped")):
            values = [mb(x[key][index]) if x[key] else "-" for x in (ours, typ, bare)]
            rows.append((f"{label}, {kind} (MB)", *values, "", "", "", ""))
    total = [
        (x["function_size"][1] + (x["layer_size"][1] if x["layer_size"] else 0))
        for x in (ours, typ, bare)
    ]
    rows.append(("everything deployed, zipped (MB)", *(mb(t) for t in total),
                 f"{total[0] / total[1]:.2f}x", "", "", ""))  # fmt: skip

    header = ("figure", NAMES["ours"], NAMES["typical"], NAMES["bare"], "ours/typical",
              "ours/bare", "target", "")  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    m = report["machine"]
    plan = report["plan"]
    lines.append("")
    lines.append(
        f"Run on {m['date']}. Machine: {m['arch']}, {m['cpu']}, {m['cores']} cores, "
        f"Python {m['python']}, {m['system']}. "
        f"Medians of {plan['init_runs']} fresh processes (init), "
        f"{plan['cold_runs']} (cold start), {plan['warm_count']:,} warm requests each in "
        f"turns of {plan['warm_chunk']}; the implementations interleaved."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a few runs of each: it runs")
    parser.add_argument("--init-runs", type=int, help="fresh processes for cold init")
    parser.add_argument("--cold-runs", type=int, help="fresh processes for cold start")
    parser.add_argument("--warm-count", type=int, help="warm requests per implementation")
    parser.add_argument(
        "--update-docs", action="store_true", help=f"write the table into {DOCS.name}"
    )
    args = parser.parse_args()
    plan = SMOKE if args.smoke else FULL
    plan = Plan(
        init_runs=args.init_runs or plan.init_runs,
        cold_runs=args.cold_runs or plan.cold_runs,
        warm_count=args.warm_count or plan.warm_count,
        warm_chunk=plan.warm_chunk,
    )
    report = measure(plan)
    CACHE.mkdir(exist_ok=True)
    (CACHE / ("smoke.json" if args.smoke else "latest.json")).write_text(
        json.dumps(report, indent=2), "utf-8"
    )
    printed = table(report)
    print(printed)
    if args.update_docs:
        update_docs(printed)


def update_docs(printed: str, docs: Path = DOCS) -> None:
    """Replace the table between the markers in the README's Performance section."""
    text = docs.read_text("utf-8")
    start, end = "<!-- bench-table -->", "<!-- /bench-table -->"
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    docs.write_text(f"{before}{start}\n{printed}\n{end}{after}", "utf-8")


if __name__ == "__main__":
    main()
