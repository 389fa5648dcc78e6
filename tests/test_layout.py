"""The suite's own layout: helpers live in support modules, never in a conftest or a test
module, and every test file has a name of its own."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _is_test_or_conftest(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return last == "conftest" or last.startswith("test_")


def forbidden_imports(path: Path) -> list[str]:
    """Imports of a conftest or of a test module in ``path``, as ``line: module``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            # `from tests.worker import test_worker` imports the module by its name.
            modules = [base, *(f"{base.rstrip('.')}.{alias.name}" for alias in node.names)]
        else:
            continue
        found += [f"{node.lineno}: {m}" for m in modules if _is_test_or_conftest(m)]
    return found


def test_no_module_imports_a_conftest_or_a_test_module() -> None:
    offenders = {
        str(path.relative_to(TESTS)): imports
        for path in sorted(TESTS.rglob("*.py"))
        if (imports := forbidden_imports(path))
    }
    # Helpers belong in tests/support.py or the package's support.py; conftest files hold
    # fixtures and hooks only, and test modules only tests.
    assert offenders == {}


def test_the_check_sees_every_form_of_such_an_import(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "from tests.conftest import KEY\n"
        "from tests.worker.test_worker import Agent\n"
        "from tests.worker import test_worker\n"
        "import tests.reliability.conftest\n"
        "from .conftest import thing\n"
        "from tests.support import KEY\n"
        "from tests.worker.support import Agent\n",
        encoding="utf-8",
    )
    assert forbidden_imports(source) == [
        "1: tests.conftest",
        "2: tests.worker.test_worker",
        "3: tests.worker.test_worker",
        "4: tests.reliability.conftest",
        "5: .conftest",
    ]


def test_no_two_test_files_share_a_name() -> None:
    by_name: dict[str, list[str]] = defaultdict(list)
    for path in sorted(TESTS.rglob("test_*.py")):
        by_name[path.name].append(str(path.relative_to(TESTS)))
    assert {name: paths for name, paths in by_name.items() if len(paths) > 1} == {}
