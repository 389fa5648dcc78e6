"""The package's layers, and the one direction its imports go (README.md, "Layout").

Every top-level module or subpackage of ``openhands_stop`` is a unit with a rank. A module
may import modules of its own unit and of units of a lower rank, nothing else, so two units
of one rank never import each other and no cycle between units can form:

    0  constants, the package's __init__   names and limits; importing nothing of ours
    1  domain, settings                    the contract (no AWS); the stack's resources
    2  aws                                 the adapters that speak AWS for the domain
    3  edge, worker                        the HTTP route; the agent worker
    4  wiring                              builds the product from its settings
    5  lambda_entry, integrations,         what runs it: the Lambda entry, agent hosts,
       every __main__                      ``python -m`` entries (the worker's)

Every import counts: at module level, inside a function, under ``TYPE_CHECKING``, relative.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "layers" / "common" / "openhands_stop"
PACKAGE = "openhands_stop"
INIT = "__init__"
"""The unit of the package's own ``__init__``: every import of the package runs it."""
MAIN = "__main__"
"""The unit of every ``python -m`` entry (``worker/__main__.py``): like the Lambda entry, it
builds what it runs through ``wiring``."""

RANKS: dict[str, int] = {
    "constants": 0,
    INIT: 0,
    "domain": 1,
    "settings": 1,
    "aws": 2,
    "edge": 3,
    "worker": 3,
    "wiring": 4,
    "lambda_entry": 5,
    "integrations": 5,
    MAIN: 5,
}

WEB_STACK = ("fastapi", "starlette", "mangum", "aws_lambda_powertools", "uvicorn")
AWS_SDK = ("boto3", "botocore", "mypy_boto3_dynamodb", "mypy_boto3_sqs")
FORBIDDEN_OUTSIDE: dict[str, tuple[str, ...]] = {
    "constants": (*WEB_STACK, *AWS_SDK, "pydantic"),
    "domain": (*WEB_STACK, *AWS_SDK),
    "settings": (*WEB_STACK, *AWS_SDK),
    "aws": WEB_STACK,
    "worker": WEB_STACK,
}
"""Outside packages a unit must not import: the domain speaks neither AWS nor HTTP, the
adapters and the worker no HTTP (an agent host installs the worker without the web stack)."""


@dataclass(frozen=True)
class Import:
    path: str  # the importing file, relative to the repository
    line: int
    module: str  # the importing module
    target: str  # the module imported, absolute


def module_name(path: Path, package_dir: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == INIT:
        parts.pop()
    return ".".join(parts)


def imports_in(
    source: str, module: str, *, is_package: bool, exists: set[str], path: str
) -> Iterator[Import]:
    """Every import in ``source`` (the code of ``module``), wherever it stands.

    ``from a import b`` imports ``a.b`` when that is a module of ours (in ``exists``),
    else ``a``; a relative import is resolved against ``module``'s package.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, module, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield Import(path, node.lineno, module, candidate if candidate in exists else base)


def unit_of(module: str) -> str | None:
    """The unit of one of our modules (``None`` for anything not ours)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    if parts[-1] == MAIN:
        return MAIN
    return parts[1] if len(parts) > 1 else INIT


def read_package(package_dir: Path, root: Path) -> dict[str, tuple[str, bool, str]]:
    """Every module of the package: its source, whether it is a package, its path from
    ``root``."""
    return {
        module_name(path, package_dir): (
            path.read_text(encoding="utf-8"),
            path.name == f"{INIT}.py",
            str(path.relative_to(root)),
        )
        for path in sorted(package_dir.rglob("*.py"))
    }


def all_imports(modules: Mapping[str, tuple[str, bool, str]]) -> list[Import]:
    exists = set(modules)
    found = [
        each
        for module, (source, is_package, path) in modules.items()
        for each in imports_in(source, module, is_package=is_package, exists=exists, path=path)
    ]
    return sorted(found, key=lambda each: (each.path, each.line, each.target))


def package_imports() -> list[Import]:
    return all_imports(read_package(PACKAGE_DIR, ROOT))


def arrows_against_the_direction(imports: list[Import]) -> list[str]:
    problems = []
    for found in imports:
        source, target = unit_of(found.module), unit_of(found.target)
        if source is None or target is None or source == target:
            continue
        where = f"{found.path}:{found.line} imports {found.target}"
        if source not in RANKS or target not in RANKS:
            unknown = source if source not in RANKS else target
            problems.append(f"{where}: {unknown} has no layer: give it a rank in RANKS")
        elif RANKS[target] >= RANKS[source]:
            allowed = sorted(unit for unit, rank in RANKS.items() if rank < RANKS[source])
            problems.append(f"{where}: {source} may import only {', '.join(allowed)}")
    return problems


def cycles_between_units(imports: list[Import]) -> list[str]:
    """Each cycle of the unit graph, once, with one import that makes each of its arrows."""
    arrows: dict[str, dict[str, Import]] = {}
    for found in imports:
        source, target = unit_of(found.module), unit_of(found.target)
        if source is not None and target is not None and source != target:
            arrows.setdefault(source, {}).setdefault(target, found)
    cycles: list[str] = []
    seen: set[frozenset[str]] = set()

    def walk(path: list[str]) -> None:
        for target in sorted(arrows.get(path[-1], {})):
            if target == path[0]:
                members = frozenset(path)
                if members not in seen:
                    seen.add(members)
                    steps = [
                        f"{arrows[a][b].path}:{arrows[a][b].line} imports {arrows[a][b].target}"
                        for a, b in zip(path, [*path[1:], path[0]], strict=True)
                    ]
                    cycles.append(" -> ".join([*path, path[0]]) + ": " + "; ".join(steps))
            elif target not in path and target > path[0]:
                walk([*path, target])

    for start in sorted(arrows):
        walk([start])
    return cycles


def outside_imports_refused(imports: list[Import]) -> list[str]:
    problems = []
    for found in imports:
        unit = unit_of(found.module)
        top = found.target.split(".")[0]
        if unit in FORBIDDEN_OUTSIDE and top in FORBIDDEN_OUTSIDE[unit]:
            problems.append(f"{found.path}:{found.line} imports {found.target}: not in {unit}")
    return problems


def test_every_import_goes_down_the_layers() -> None:
    problems = arrows_against_the_direction(package_imports())
    assert not problems, "\n".join(problems)


def test_no_cycle_between_the_packages() -> None:
    cycles = cycles_between_units(package_imports())
    assert not cycles, "\n".join(cycles)


def test_the_domain_speaks_no_aws_and_only_the_route_speaks_http() -> None:
    problems = outside_imports_refused(package_imports())
    assert not problems, "\n".join(problems)


def test_every_unit_of_the_package_has_a_layer() -> None:
    units = {unit_of(module) for module in read_package(PACKAGE_DIR, ROOT)}
    assert units <= set(RANKS), "a new module or subpackage: give it a rank in RANKS"


def test_the_checks_see_every_form_of_a_wrong_import(tmp_path: Path) -> None:
    files = {
        "__init__.py": "",
        "constants.py": "",
        "wiring.py": "",
        "domain/__init__.py": "",
        "domain/models.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from openhands_stop.aws.clients import CLIENT\n"
            "def later():\n"
            "    import openhands_stop.edge.app\n"
            "from ..worker import runs\n"
            "from . import ports\n"
            "import botocore\n"
        ),
        "domain/ports.py": "from openhands_stop.constants import X\n",
        "aws/__init__.py": "",
        "aws/clients.py": "from openhands_stop import wiring\n",
        "edge/__init__.py": "",
        "edge/app.py": "from openhands_stop.domain import models\n",
        "worker/__init__.py": "",
        "worker/runs.py": "from openhands_stop.edge import app\n",
        "worker/__main__.py": "from openhands_stop import wiring\n",  # an entry: allowed
        "extra/__init__.py": "",
    }
    package_dir = tmp_path / PACKAGE
    for name, source in files.items():
        (package_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (package_dir / name).write_text(source, encoding="utf-8")
    modules = read_package(package_dir, tmp_path)
    imports = all_imports(modules)

    against = arrows_against_the_direction(imports)
    assert [problem.split(": ", 1)[0] for problem in against] == [
        "openhands_stop/aws/clients.py:1 imports openhands_stop.wiring",
        "openhands_stop/domain/models.py:3 imports openhands_stop.aws.clients",
        "openhands_stop/domain/models.py:5 imports openhands_stop.edge.app",
        "openhands_stop/domain/models.py:6 imports openhands_stop.worker.runs",
        "openhands_stop/worker/runs.py:1 imports openhands_stop.edge.app",
    ]
    assert against[-1].endswith("worker may import only __init__, aws, constants, domain, settings")
    assert [cycle.split(": ", 1)[0] for cycle in cycles_between_units(imports)] == [
        "domain -> edge -> domain",
        "domain -> worker -> edge -> domain",
    ]
    assert outside_imports_refused(imports) == [
        "openhands_stop/domain/models.py:8 imports botocore: not in domain"
    ]
    assert {unit_of(module) for module in modules} - set(RANKS) == {"extra"}
