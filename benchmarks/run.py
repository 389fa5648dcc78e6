"""``make bench``: our stop function against two peers, side by side, in one table.

Every figure comes from fresh interpreters running the packaged artifacts (see
``benchmarks.artifacts``) with bytecode writes disabled, as Lambda runs them: by default on
the Lambda runtime's CPython 3.13 (``--python dev`` for the dev venv's). The three
implementations are interleaved (ours, typical, bare, ours, ...) so that load from whatever
else shares the machine falls on all of them alike; figures are medians. The targets and
the tables are ``benchmarks.report``'s.

Every figure of those tables is taken with the confirmed stop's wait off
(``STOP_WAIT_SECONDS=0``), as the peers answer without one. After them,
``benchmarks.confirmed`` measures a confirmed stop end to end, the wait off against on,
against a real worker process (``--only-confirmed``: that alone).

``--smoke`` runs every measurement a few times only: it checks the benchmark works, not
that a target is met. ``--runs 3`` runs it all three times in a row; ``--update-docs``
writes the last run's table, the runs' table, the import breakdown and the confirmed stop's
table into ``docs/performance.md`` (with ``--only-confirmed``, the confirmed stop's alone).
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
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import confirmed, report
from benchmarks.artifacts import CACHE, Artifact, Interpreter, build, interpreter, size
from benchmarks.progress import Progress
from local import doc_sections
from local.emulation import (
    AWS_DUMMY_ENV,
    DEMO_SESSION_KEY,
    OFFLINE_FUNCTION_ENV,
    Stack,
    create_stack,
    moto_server,
    seed,
)
from local.machine import facts as host_facts

PROBE = Path(__file__).resolve().parent / "probe.py"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
IMPORTTIME_MARKER = "bench: the handler's imports follow"  # as probe.py writes it
# Where a stubbed run's AWS calls would go if the stub ever let one through: nothing listens.
NOWHERE = "http://127.0.0.1:9"


@dataclass(frozen=True)
class Plan:
    init_runs: int
    cold_runs: int
    warm_count: int
    warm_chunk: int
    importtime_runs: int


FULL = Plan(init_runs=41, cold_runs=41, warm_count=20_000, warm_chunk=250, importtime_runs=15)
SMOKE = Plan(init_runs=2, cold_runs=1, warm_count=200, warm_chunk=100, importtime_runs=1)


def _command(
    python: Interpreter, mode: str, result_file: Path, *args: str, options: tuple[str, ...] = ()
) -> list[str]:
    """-B (no bytecode writes), -S (no site: no installed packages), -P (the probe's folder
    stays off sys.path); PYTHONPATH is the artifact's."""
    command = [python.executable, "-B", "-S", "-P", *options, str(PROBE), mode, str(result_file)]
    return [*command, *args]


def _environment(artifact: Artifact, env: dict[str, str]) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join(str(p) for p in artifact.path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "BENCH_SESSION_KEY": DEMO_SESSION_KEY,
        **AWS_DUMMY_ENV,
        **env,
        # The peers answer without waiting for the loop's end: ours is measured so too (the
        # confirmed stop has its own section, benchmarks.confirmed).
        "STOP_WAIT_SECONDS": "0",
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


def _probe(
    python: Interpreter,
    artifact: Artifact,
    mode: str,
    env: dict[str, str],
    *args: str,
    options: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One measurement in one fresh interpreter (its stderr kept as ``stderr``)."""
    result_file = _result_file()
    completed = subprocess.run(
        _command(python, mode, result_file, *args, options=options),
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
    return {**_read_result(result_file), "stderr": completed.stderr}


def _importtime_by_package(stderr: str) -> dict[str, int]:
    """``-X importtime``'s self times (us) of the handler's imports, summed by top-level
    package."""
    _, marker, after = stderr.partition(IMPORTTIME_MARKER)
    if not marker:
        raise RuntimeError(f"no importtime marker in:\n{stderr[-2000:]}")
    by_package: Counter[str] = Counter()
    for line in after.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line.removeprefix("import time:").split("|")
        by_package[name.strip().split(".")[0]] += int(self_us)
    return dict(by_package)


def _warm_lockstep(
    python: Interpreter,
    artifacts: list[Artifact],
    env: dict[str, str],
    level: str,
    plan: Plan,
    *,
    progress: Progress,
) -> dict[str, dict[str, Any]]:
    """One warm process per implementation, all alive at once, taking turns ``chunk``
    requests at a time until each has served ``count``: load falls on all of them alike."""
    count, chunk = plan.warm_count, plan.warm_chunk
    phase = f"warm requests ({level}), each implementation"
    running: list[tuple[Artifact, subprocess.Popen[str], Path]] = []
    try:
        for artifact in artifacts:  # started one after another: inits do not overlap
            result_file = _result_file()
            process = subprocess.Popen(
                _command(python, "warm", result_file, level, str(count)),
                env=_environment(artifact, env),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            running.append((artifact, process, result_file))
            _expect(process, "ready", artifact)
        served = 0
        progress.count(phase, served, count)
        while served < count:
            step = min(chunk, count - served)
            for artifact, process, _ in running:
                assert process.stdin is not None
                process.stdin.write(f"{step}\n")
                process.stdin.flush()
                _expect(process, "ok", artifact)
            served += step
            progress.count(phase, served, count)
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
    artifacts: list[Artifact],
    runs: int,
    one: Callable[[Artifact, int], dict[str, Any]],
    progress: Progress,
    phase: str,
) -> dict[str, list[dict[str, Any]]]:
    """``one`` for each artifact in turn, ``runs`` rounds; ``phase`` counts the processes."""
    results: dict[str, list[dict[str, Any]]] = {a.name: [] for a in artifacts}
    total = runs * len(artifacts)
    progress.count(phase, 0, total)
    for i in range(runs):
        for artifact in artifacts:
            results[artifact.name].append(one(artifact, i))
            progress.count(phase, sum(map(len, results.values())), total)
    return results


@contextmanager
def _aws() -> Iterator[Stack]:
    with moto_server() as endpoint:
        yield create_stack(endpoint, suffix=f"-bench-{uuid.uuid4().hex[:6]}")


def _percentile(samples: list[int], fraction: float) -> float:
    ordered = sorted(samples)
    return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])


def measure(plan: Plan, python: Interpreter, progress: Progress) -> dict[str, Any]:
    began = time.monotonic()
    progress.say(f"building the artifacts for CPython {python.version}")
    artifacts = build(python, say=progress.say)
    figures: dict[str, dict[str, Any]] = {a.name: {} for a in artifacts}

    with _aws() as stack:
        env = stack.function_environment()

        def cold(artifact: Artifact, i: int) -> dict[str, Any]:
            conversation_id = f"cold-{artifact.name}-{i}-{uuid.uuid4().hex[:6]}"
            seed(stack, {conversation_id: "RUNNING"})
            result = _probe(python, artifact, "cold", env, conversation_id)
            if result["status"] != 200 or "stopped successfully" not in result["body"]:
                raise RuntimeError(f"{artifact.name}: a cold stop answered {result}")
            return result

        def calls(artifact: Artifact, _: int) -> dict[str, Any]:
            ids = [f"calls-{artifact.name}-{n}-{uuid.uuid4().hex[:6]}" for n in range(3)]
            seed(stack, {ids[0]: "RUNNING", ids[1]: "RUNNING", ids[2]: "STOPPED"})
            return _probe(python, artifact, "calls", env, *ids)

        cold_starts = _interleaved(artifacts, plan.cold_runs, cold, progress, "cold starts")
        for name, runs in cold_starts.items():
            figures[name]["cold_start_ms"] = statistics.median(
                1000 * (r["import_s"] + r["first_s"]) for r in runs
            )
            figures[name]["cold_import_ms_loopback"] = statistics.median(
                1000 * r["import_s"] for r in runs
            )
            figures[name]["cold_start_fastest_ms"] = min(
                1000 * (r["import_s"] + r["first_s"]) for r in runs
            )
        for name, runs in _interleaved(artifacts, 1, calls, progress, "AWS calls").items():
            figures[name]["calls"] = runs[0]["counts"]

    stub_env = {**OFFLINE_FUNCTION_ENV, "AWS_ENDPOINT_URL": NOWHERE}

    # A fourth process per round: ours with X-Ray tracing on (the template's EnableTracing),
    # which loads the X-Ray SDK and patches botocore at init.
    traced_env = {**stub_env, "POWERTOOLS_TRACE_DISABLED": "false"}
    traced_runs: list[dict[str, Any]] = []

    def init(artifact: Artifact, _: int) -> dict[str, Any]:
        result = _probe(python, artifact, "init", stub_env)
        if artifact.name == "ours":
            traced_runs.append(_probe(python, artifact, "init", traced_env))
        return result

    def importtime(artifact: Artifact, _: int) -> dict[str, Any]:
        return _probe(python, artifact, "importtime", stub_env, options=("-X", "importtime"))

    inits = _interleaved(artifacts, plan.init_runs, init, progress, "cold inits (stubbed AWS)")
    for name, runs in inits.items():
        figures[name]["cold_init_ms"] = statistics.median(1000 * r["import_s"] for r in runs)
        figures[name]["cold_init_fastest_ms"] = min(1000 * r["import_s"] for r in runs)
        figures[name]["cold_init_cpu_ms"] = statistics.median(
            1000 * r["import_cpu_s"] for r in runs
        )
        figures[name]["init_peak_rss_mib"] = statistics.median(
            r["peak_rss_kib"] / 1024 for r in runs
        )
        figures[name]["without_bytecode"] = sorted({m for r in runs for m in r["without_bytecode"]})
    figures["ours"]["cold_init_traced_ms"] = statistics.median(
        1000 * r["import_s"] for r in traced_runs
    )
    importtimes = _interleaved(
        artifacts, plan.importtime_runs, importtime, progress, "-X importtime processes"
    )
    for name, runs in importtimes.items():
        figures[name]["importtime_us"] = [_importtime_by_package(r["stderr"]) for r in runs]
    for level in ("http", "sdk"):
        warm = _warm_lockstep(python, artifacts, stub_env, level, plan, progress=progress)
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
    return {
        "machine": machine(),
        "python": {
            "version": python.version,
            "feature": python.feature,
            "label": python.label,
            "platform": f"manylinux2014_{platform.machine()}",
        },
        "plan": plan.__dict__,
        "figures": figures,
        "seconds": time.monotonic() - began,
    }


def machine() -> dict[str, str]:
    """Today's date and the host's facts (``local.machine``)."""
    return {"date": time.strftime("%Y-%m-%d", time.gmtime()), **host_facts()}


def stdlib_modules(python: Interpreter) -> set[str]:
    names = subprocess.run(
        [python.executable, "-S", "-c", "import sys; print(*sys.stdlib_module_names)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(names.stdout.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a few runs of each: it runs")
    parser.add_argument(
        "--python",
        default="runtime",
        help="runtime (default: the Lambda runtime's CPython 3.13, `make runtime-python`), "
        "dev (this venv's interpreter), or a path to a CPython",
    )
    parser.add_argument("--runs", type=int, default=1, help="full runs one after another")
    parser.add_argument("--init-runs", type=int, help="fresh processes for cold init")
    parser.add_argument("--cold-runs", type=int, help="fresh processes for cold start")
    parser.add_argument("--warm-count", type=int, help="warm requests per implementation")
    parser.add_argument("--importtime-runs", type=int, help="fresh processes under -X importtime")
    parser.add_argument(
        "--confirmed-stops",
        type=int,
        help=f"stops each way for the confirmed stop ({confirmed.FULL_STOPS}; "
        f"{confirmed.SMOKE_STOPS} with --smoke)",
    )
    parser.add_argument(
        "--only-confirmed",
        action="store_true",
        help="measure the confirmed stop alone (with --update-docs: write its section only)",
    )
    parser.add_argument(
        "--update-docs", action="store_true", help=f"write the tables into docs/{DOCS.name}"
    )
    args = parser.parse_args()
    CACHE.mkdir(exist_ok=True)
    name = "smoke" if args.smoke else "latest"
    sections: dict[str, str] = {}
    missed: list[str] = []
    progress = Progress()
    if not args.only_confirmed:
        sections, missed = _compare(args, name, progress)
    stops = args.confirmed_stops or (confirmed.SMOKE_STOPS if args.smoke else confirmed.FULL_STOPS)
    progress.context = ""
    progress.say(f"the confirmed stop: {stops} stops each way, against a worker")
    result = {**confirmed.measure(stops, progress=progress), "machine": machine()}
    (CACHE / f"{name}-confirmed.json").write_text(json.dumps(result, indent=2), "utf-8")
    section = report.confirmed_table(result, alone=args.only_confirmed)
    print(f"\n{section}", flush=True)
    verdicts = report.confirmed_verdicts(report.confirmed_figures(result))
    missed += [f"confirmed stop: {label}" for label, ok in verdicts.items() if not ok]
    if missed:
        note = " (a smoke run: too few samples for its times to mean anything)" * args.smoke
        print(f"\nmissed{note}: " + "; ".join(missed), file=sys.stderr)
    if args.update_docs:
        update_docs({**sections, "bench-confirmed": section})


def _compare(
    args: argparse.Namespace, name: str, progress: Progress
) -> tuple[dict[str, str], list[str]]:
    """Ours against the peers (``--runs`` times): the docs' sections, the targets missed."""
    plan = SMOKE if args.smoke else FULL
    plan = Plan(
        init_runs=args.init_runs or plan.init_runs,
        cold_runs=args.cold_runs or plan.cold_runs,
        warm_count=args.warm_count or plan.warm_count,
        warm_chunk=plan.warm_chunk,
        importtime_runs=args.importtime_runs or plan.importtime_runs,
    )
    python = interpreter(args.python)
    reports = []
    for number in range(1, args.runs + 1):
        progress.context = f"run {number} of {args.runs}: "
        progress.say(f"on CPython {python.version}")
        reports.append(measure(plan, python, progress))
        for path in (CACHE / f"{name}.json", CACHE / f"{name}-run-{number}.json"):
            path.write_text(json.dumps(reports[-1], indent=2), "utf-8")
        print(report.table(reports[-1]), flush=True)
    runs = report.runs_table(reports)
    breakdown = report.import_breakdown(reports, stdlib_modules(python))
    print(f"\n{runs}\n\n{breakdown}")
    missed = [
        f"run {n}: {label}"
        for n, r in enumerate(reports, 1)
        for label, ok in report.verdicts(r).items()
        if not ok
    ]
    sections = {"bench-table": report.table(reports[-1]), "bench-breakdown": breakdown}
    if len(reports) > 1:
        sections["bench-runs"] = runs
    return sections, missed


def update_docs(sections: dict[str, str], docs: Path = DOCS) -> None:
    """Replace each section's text between its markers (``<!-- name -->`` and
    ``<!-- /name -->``) in the docs."""
    text = docs.read_text("utf-8")
    for name, body in sections.items():
        text = doc_sections.replace_body(text, doc_sections.Markers.named(name), body)
    docs.write_text(text, "utf-8")


if __name__ == "__main__":
    main()
