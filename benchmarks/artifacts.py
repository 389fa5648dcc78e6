"""Packaged artifacts, built as Lambda runs them: dependencies installed as wheels for the
interpreter that runs the benchmark (by default the Lambda runtime's CPython 3.13, the one
``make build`` compiles the layer with), the code, and bytecode compiled by that interpreter.

Dependencies come from ``pip install --platform manylinux2014_<this machine> --implementation
cp --python-version <X.Y> --only-binary=:all: --target``, as ``layers/common/Makefile``
installs the layer for Lambda (which builds it for arm64; this machine runs x86_64 wheels of
the same versions). Our layer mirrors that Makefile (its requirements, the tracing extras
installed with ``--no-deps``, botocore pruned to our services, no ``bin/``), and every
artifact, peers included, gets the same bytecode: the interpreter's own ``compileall`` with
unchecked-hash invalidation, as the layer build compiles it.

Dependencies are installed once per requirements set into ``.bench/deps/<hash>`` (gitignored)
and hard-linked into each artifact; the code is copied and compiled afresh on every run, so
an edit is always what gets measured.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from openhands_stop.aws.clients import LAYER_BOTOCORE_SERVICES

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench"
PEERS = Path(__file__).resolve().parent / "peers"
LAYER_REQUIREMENTS = ROOT / "layers" / "common" / "requirements.txt"
TRACING_REQUIREMENTS = ROOT / "layers" / "common" / "requirements-tracing.txt"
PRUNE_BOTOCORE = ROOT / "layers" / "common" / "prune_botocore.py"
RUNTIME_PYTHON = ROOT / ".runtime-python" / "bin" / "python3.13"
"""The Lambda runtime's interpreter, as ``make runtime-python`` unpacks it."""


@dataclass(frozen=True)
class Interpreter:
    """The CPython that runs every measured process and compiles the artifacts' bytecode."""

    executable: str
    version: str
    """Its full version, e.g. ``3.13.5``."""
    label: str

    @property
    def feature(self) -> str:
        """``3.13``: the version wheels are chosen for."""
        return ".".join(self.version.split(".")[:2])


def interpreter(choice: str) -> Interpreter:
    """``runtime``: the Lambda runtime's CPython 3.13 (``make runtime-python``); ``dev``: the
    interpreter running this benchmark (the dev venv's); anything else: a path to a CPython."""
    if choice == "runtime":
        if not RUNTIME_PYTHON.exists():
            raise SystemExit(f"no {RUNTIME_PYTHON}: run `make runtime-python` first")
        executable, label = str(RUNTIME_PYTHON), "the Lambda runtime's (Debian's build)"
    elif choice == "dev":
        executable, label = sys.executable, "the dev venv's"
    else:
        executable, label = choice, choice
    asked = subprocess.run(
        [executable, "-S", "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=False,
    )
    if asked.returncode != 0:
        raise SystemExit(f"{executable} does not run:\n{asked.stderr}")
    return Interpreter(executable, asked.stdout.strip(), label)


@dataclass(frozen=True)
class Artifact:
    """One implementation as deployed: ``path`` is its sys.path order on Lambda
    (/var/task, then the layer's /opt/python, then the runtime's boto3)."""

    name: str
    function: Path
    layer: Path | None
    runtime: Path

    @property
    def path(self) -> list[Path]:
        return [self.function, *([self.layer] if self.layer else []), self.runtime]


def _platform() -> str:
    return f"manylinux2014_{platform.machine()}"


def _deps(
    python: Interpreter,
    label: str,
    requirements: list[str],
    no_deps: list[str] | None = None,
    *,
    prune_botocore: bool = False,
    say: Callable[[str], None] = lambda _: None,
) -> Path:
    """``pip install --target`` of ``requirements`` (and of ``no_deps`` without their
    dependencies) as wheels for ``python``, botocore pruned as the layer's build prunes it if
    asked, compiled by ``python``; cached by their content."""
    extra = no_deps or []
    pruning = (
        [PRUNE_BOTOCORE.read_text("utf-8"), *LAYER_BOTOCORE_SERVICES] if prune_botocore else []
    )
    key = "\n".join(
        [
            python.executable,
            python.version,
            _platform(),
            *requirements,
            "--no-deps",
            *extra,
            *pruning,
        ]
    )
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    target = CACHE / "deps" / f"{label}-cp{python.feature.replace('.', '')}-{digest}"
    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    say(f"pip install of the {label} dependencies (once: cached in {target.parent})")
    # The dev venv's pip installs for the measured interpreter: wheels only, chosen by the
    # target's platform and version, as the layer's build installs them for Lambda.
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    pip += ["--no-compile", "--platform", _platform(), "--implementation", "cp"]
    pip += ["--python-version", python.feature, "--only-binary=:all:", "--target", str(target)]
    for command in [[*pip, *requirements], *([[*pip, "--no-deps", *extra]] if extra else [])]:
        installed = subprocess.run(command, capture_output=True, text=True, check=False)
        if installed.returncode != 0:
            raise RuntimeError(f"pip install for {label} failed:\n{installed.stderr}")
    if prune_botocore:
        pruned = subprocess.run(
            [
                sys.executable,
                str(PRUNE_BOTOCORE),
                str(target / "botocore"),
                *LAYER_BOTOCORE_SERVICES,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if pruned.returncode != 0:
            raise RuntimeError(f"pruning botocore for {label} failed:\n{pruned.stderr}")
    shutil.rmtree(target / "bin", ignore_errors=True)
    _compile(python, target)
    (target / ".complete").touch()
    return target


def _requirements(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text("utf-8").splitlines())
    return [line for line in lines if line]


def _compile(python: Interpreter, directory: Path) -> None:
    """Bytecode by the measured interpreter, as the layer's build compiles it: what Lambda
    reads instead of compiling."""
    command = [python.executable, "-m", "compileall", "-q", "-j", "0"]
    command += ["--invalidation-mode", "unchecked-hash", str(directory)]
    compiled = subprocess.run(command, capture_output=True, text=True, check=False)
    if compiled.returncode != 0:
        raise RuntimeError(f"compileall failed in {directory}:\n{compiled.stdout}")


def _link_tree(source: Path, target: Path) -> None:
    shutil.copytree(
        source, target, copy_function=os.link, ignore=shutil.ignore_patterns(".complete")
    )


def _copy_code(source: Path, target: Path) -> None:
    shutil.copytree(
        source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "requirements.txt")
    )


def build(python: Interpreter, say: Callable[[str], None] = lambda _: None) -> list[Artifact]:
    """Our function (function + layer), the typical template and the bare handler, for
    ``python``; ``say`` tells of the slow steps."""
    runtime = _deps(
        python,
        "runtime",
        [f"boto3=={version('boto3')}", f"botocore=={version('botocore')}"],
        say=say,
    )
    layer_deps = _deps(
        python,
        "layer",
        _requirements(LAYER_REQUIREMENTS),
        _requirements(TRACING_REQUIREMENTS),
        prune_botocore=True,
        say=say,
    )
    typical_deps = _deps(
        python, "typical", _requirements(PEERS / "typical" / "requirements.txt"), say=say
    )

    built = CACHE / f"artifacts-cp{python.feature.replace('.', '')}"
    shutil.rmtree(built, ignore_errors=True)
    built.mkdir(parents=True)

    ours_function = built / "ours" / "function"
    ours_layer = built / "ours" / "layer" / "python"
    _copy_code(ROOT / "functions" / "stop_conversation", ours_function)
    _link_tree(layer_deps, ours_layer)
    _copy_code(ROOT / "layers" / "common" / "openhands_stop", ours_layer / "openhands_stop")

    typical = built / "typical" / "function"
    _link_tree(typical_deps, typical)
    shutil.copy2(PEERS / "typical" / "app.py", typical / "app.py")

    bare = built / "bare" / "function"
    bare.mkdir(parents=True)
    shutil.copy2(PEERS / "bare" / "app.py", bare / "app.py")

    for directory in (ours_function, ours_layer / "openhands_stop", typical, bare):
        _compile(python, directory)
    return [
        Artifact("ours", ours_function, ours_layer, runtime),
        Artifact("typical", typical, None, runtime),
        Artifact("bare", bare, None, runtime),
    ]


def size(directory: Path, *, zip_root: Path | None = None) -> tuple[int, int]:
    """(unzipped bytes, zipped bytes) of a directory, as a deployment zip would hold it."""
    root = zip_root or directory
    unzipped = 0
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file() and path.name != ".complete":
                unzipped += path.stat().st_size
                archive.write(path, path.relative_to(root))
    return unzipped, len(buffer.getvalue())
