"""docs/openhands.md stays true to the code it documents (runs without OpenHands installed:
the integration itself is tested by ``make test-openhands``)."""

from __future__ import annotations

import importlib.util
import re
import tomllib

from openhands_stop.worker import WorkerSettings

from local.emulation import ROOT

DOC = ROOT / "docs" / "openhands.md"
MODULE = ROOT / "layers" / "common" / "openhands_stop" / "integrations" / "openhands.py"


def test_the_page_names_every_worker_variable() -> None:
    text = DOC.read_text(encoding="utf-8")
    aliases = {field.alias for field in WorkerSettings.model_fields.values()}
    missing = sorted(alias for alias in aliases if alias and f"`{alias}`" not in text)
    assert missing == []


def test_the_real_openhands_server_is_tested_with_the_class_the_page_names() -> None:
    # make test-openhands starts OpenHands 0.53 with CONVERSATION_MANAGER_CLASS set to the
    # page's value, and OpenHands loads the class by that path: a wrong path fails there.
    # Without OpenHands installed, the path must at least name a module of ours.
    from tests.openhands.support import MANAGER_CLASS

    module, _, name = MANAGER_CLASS.rpartition(".")
    spec = importlib.util.find_spec(module)
    assert spec is not None
    assert spec.origin == str(MODULE)
    assert name.isidentifier()


def test_the_openhands_extra_pins_the_version_the_tests_run() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extra = project["project"]["optional-dependencies"]["openhands"]
    constraints = (ROOT / "tests" / "openhands" / "constraints.txt").read_text(encoding="utf-8")
    tested = re.search(r"^openhands-ai==(\S+)$", constraints, re.MULTILINE)
    assert tested is not None
    assert "openhands-ai>=0.53,<0.54" in extra
    assert tested.group(1).startswith("0.53.")


def test_the_page_names_every_agent_server_sidecar_variable() -> None:
    from openhands_stop.integrations.agent_server import AgentServerSettings

    text = DOC.read_text(encoding="utf-8")
    aliases = {field.alias for field in AgentServerSettings.model_fields.values()}
    assert sorted(alias for alias in aliases if alias and f"`{alias}`" not in text) == []


def test_the_agent_server_pins_the_version_the_tests_run() -> None:
    constraints = (ROOT / "tests" / "agent_server" / "constraints.txt").read_text("utf-8")
    assert re.search(r"^openhands-agent-server==1\.58\.\d+$", constraints, re.MULTILINE)
