"""The machine a measurement ran on, as the generated docs name it: read from the host itself,
never assumed (``make fleet``, ``make reliability`` and ``make bench`` write it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text("utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def facts() -> dict[str, str]:
    """Architecture, CPU, cores, system and this process's Python."""
    return {
        "arch": platform.machine(),
        "cpu": cpu_model(),
        "cores": str(os.cpu_count() or "unknown"),
        "system": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def describe() -> str:
    """The facts in a few words: "x86_64, AMD EPYC 7B13, 2 cores, Linux 6.1.0, CPython 3.11.7"."""
    found = facts()
    cores = found["cores"]
    return (
        f"{found['arch']}, {found['cpu']}, {cores} core{'' if cores == '1' else 's'}, "
        f"{found['system']}, {found['python']}"
    )
