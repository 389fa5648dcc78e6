"""``python -m local.fleet``: the run (``make fleet``), or ``moto --port N``: moto's server in
a process of its own, as the run starts it."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path

from local import doc_sections
from local.fleet import costs, render
from local.fleet.config import FULL, SMALL
from local.fleet.processes import moto_main
from local.fleet.scenario import run_fleet


def _write(path: Path, splice: Callable[[str, str], str], section: str) -> None:
    document = path.read_text(encoding="utf-8") if path.exists() else ""
    path.write_text(splice(document, section), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("role", nargs="?", choices=["drive", "moto"], default="drive")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="the size pytest runs")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--conversations", type=int)
    parser.add_argument("--cycles", type=int)
    parser.add_argument("--max-seconds", type=float)
    parser.add_argument(
        "--dwell", type=float, nargs=2, metavar=("MIN", "MAX"), help="seconds a loop runs"
    )
    parser.add_argument("--output", type=Path, help="write the section into this document")
    parser.add_argument("--events", type=Path, help="write every line the processes wrote here")
    parser.add_argument("--costs", type=Path, help="write the cost section into this document")
    args = parser.parse_args(argv)
    if args.role == "moto":
        moto_main(args.port)
        return 0
    config = SMALL if args.small else FULL
    overrides = {
        name: value
        for name, value in {
            "workers": args.workers,
            "conversations": args.conversations,
            "cycles": args.cycles,
            "max_seconds": args.max_seconds,
            "dwell_seconds": tuple(args.dwell) if args.dwell else None,
        }.items()
        if value is not None
    }
    config = dataclasses.replace(config, **overrides)
    print(
        f"fleet: {config.workers} workers, {config.conversations} conversations x "
        f"{config.cycles} cycles, deadline {config.max_seconds:.0f} s",
        flush=True,
    )
    result = run_fleet(config, events=args.events)
    section = render.render_section(result)
    print(section)
    if args.output:
        _write(args.output, render.splice_section, section)
        print(f"wrote the fleet section of {args.output}")
    if args.costs:
        cost_section = costs.render_costs(
            result.costs,
            commit=doc_sections.commit(),
            generated=doc_sections.generated_at(),
            fleet_settings=config.settings_text(),
        )
        print(cost_section)
        _write(args.costs, costs.splice_costs, cost_section)
        print(f"wrote the cost section of {args.costs}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
