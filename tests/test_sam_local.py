"""make sam-local: the --env-vars file and the commands for the real `sam local invoke` and
`sam local start-api` (no Docker here: what the SAM CLI would pass and serve is read with
the SAM CLI's own providers, in its venv)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from local.emulation import DEMO_SESSION_KEY, ROOT
from tests.template.support import offline_env, sam_tool

PROBE = """
import json, sys
from samcli.commands.local.lib.local_lambda import LocalLambdaRunner
from samcli.lib.providers.api_provider import ApiProvider
from samcli.lib.providers.sam_function_provider import SamFunctionProvider
from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider
from samcli.local.lambdafn.env_vars import EnvironmentVariables
stacks, _ = SamLocalStackProvider.get_stacks(sys.argv[1])
function = SamFunctionProvider(stacks).get("StopConversationFunction")
overrides = json.load(open(sys.argv[2]))["StopConversationFunction"]
resolved = EnvironmentVariables(
    function.name, function.memory, function.timeout, function.handler,
    variables=function.environment["Variables"], override_values=overrides,
).resolve()
routes = [(sorted(r.methods), r.path, r.function_name) for r in ApiProvider(stacks).routes]
print(json.dumps({"env": resolved, "routes": routes}))
"""


def sam_local(tmp_path: Path, build: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "sam-local",
            f"SAM_LOCAL_ENV={tmp_path / 'env.json'}",
            f"SAM_BUILD_DIR={build}",
            *args,
        ],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def build(tmp_path: Path) -> Path:
    """A stand-in for `sam build`'s output: its template is the source template with the
    code paths rewritten (the sam_build tier runs the real one)."""
    build = tmp_path / "build"
    build.mkdir()
    shutil.copy(ROOT / "template.yaml", build / "template.yaml")
    return build


def test_it_writes_the_env_vars_file_and_prints_both_commands(tmp_path: Path, build: Path) -> None:
    result = sam_local(tmp_path, build)
    assert result.returncode == 0, result.stdout + result.stderr
    env = json.loads((tmp_path / "env.json").read_text())
    function = env["StopConversationFunction"]
    assert function["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"  # make run's moto
    assert function["CANCEL_QUEUE_URL"] == "http://127.0.0.1:5000/123456789012/cancel.fifo"
    assert function["CONVERSATIONS_TABLE_NAME"] == "conversations"
    out = result.stdout
    local = build / "template-sam-local.yaml"
    assert (
        f"sam local invoke StopConversationFunction --template {local} "
        f"--env-vars {tmp_path / 'env.json'} --event events/stop-running.json "
        "--docker-network host"
    ) in out
    assert "local start-api" in out
    assert "AWS_ACCESS_KEY_ID=testing" in out, "dummy credentials: no real account"
    assert DEMO_SESSION_KEY not in out + (tmp_path / "env.json").read_text()


def test_docker_desktop_reaches_the_emulation_by_host_docker_internal(
    tmp_path: Path, build: Path
) -> None:
    result = sam_local(tmp_path, build, "SAM_LOCAL_HOST=host.docker.internal")
    assert result.returncode == 0, result.stderr
    env = json.loads((tmp_path / "env.json").read_text())["StopConversationFunction"]
    assert env["AWS_ENDPOINT_URL"] == "http://host.docker.internal:5000"
    assert "--add-host host.docker.internal:host-gateway" in result.stdout


def test_without_a_build_it_says_to_build_first(tmp_path: Path) -> None:
    result = sam_local(tmp_path, tmp_path / "nothing")
    assert result.returncode != 0
    assert "run `make build` first" in result.stdout


def test_the_sam_cli_would_pass_every_variable_and_serve_the_route(
    tmp_path: Path, build: Path
) -> None:
    """What `sam local` resolves from the generated files: the function gets the
    emulation's endpoint and names (a variable the template does not declare would be
    dropped), and start-api serves the stop route."""
    python = sam_tool("python")
    assert sam_local(tmp_path, build).returncode == 0
    result = subprocess.run(
        [
            str(python),
            "-c",
            PROBE,
            str(build / "template-sam-local.yaml"),
            str(tmp_path / "env.json"),
        ],
        capture_output=True,
        text=True,
        env=offline_env(),
        timeout=120,
        check=True,
    )
    probe: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    written = json.loads((tmp_path / "env.json").read_text())["StopConversationFunction"]
    for name, value in written.items():
        assert probe["env"][name] == value, name
    assert [["POST"], "/api/conversations/{conversation_id}/stop", "StopConversationFunction"] in (
        probe["routes"]
    )
    # The source template itself is untouched: the deployed function has no endpoint.
    assert "AWS_ENDPOINT_URL" not in (ROOT / "template.yaml").read_text()
