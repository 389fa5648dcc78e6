"""`make build` (sam build, no Docker) yields an arm64 CPython 3.13 layer with its bytecode.

Slow (it fetches wheels): the ``sam_build`` tier, left out unless selected (`make test`
and CI run ``pytest -m "not full"``).
"""

from __future__ import annotations

import json
import re
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from openhands_stop.aws import clients

from tests.template.support import ROOT, offline_env, sam_tool

pytestmark = [pytest.mark.slow, pytest.mark.sam_build]

EM_AARCH64 = 183
EM_X86_64 = 62
# importlib.util.MAGIC_NUMBER of CPython 3.13 (3571), which every 3.13.x shares.
PYC_MAGIC_313 = (3571).to_bytes(2, "little") + b"\r\n"
PYC_UNCHECKED_HASH = 0b01  # hash-based, source never checked: /opt is read-only anyway


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sam_tool("sam")
    target = tmp_path_factory.mktemp("sam") / "build"
    subprocess.run(
        ["make", "--no-print-directory", "build", f"SAM_BUILD_DIR={target}"],
        cwd=ROOT,
        env=offline_env(),
        check=True,
        timeout=900,
    )
    return target


@pytest.fixture(scope="module")
def site(build_dir: Path) -> Path:
    return build_dir / "DependenciesLayer" / "python"


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", path
    assert header[4] == 2, f"{path} is not 64-bit"
    assert header[5] == 1, f"{path} is not little-endian"
    return int.from_bytes(header[18:20], "little")


def test_every_native_module_is_aarch64_for_cpython_313(site: Path) -> None:
    native = sorted(site.rglob("*.so"))
    assert any(p.name.startswith("_pydantic_core.") for p in native), "pydantic-core is native"
    for path in native:
        assert elf_machine(path) == EM_AARCH64, f"{path} is not arm64"
        if ".cpython-" in path.name:
            assert ".cpython-313-aarch64-linux-gnu." in path.name, path


def test_every_module_has_bytecode_compiled_by_cpython_313(site: Path, build_dir: Path) -> None:
    sources = sorted(site.rglob("*.py"))
    assert len(sources) > 100
    for source in sources:
        compiled = source.parent / "__pycache__" / f"{source.stem}.cpython-313.pyc"
        header = compiled.read_bytes()[:8]
        assert header[:4] == PYC_MAGIC_313, compiled
        assert int.from_bytes(header[4:8], "little") == PYC_UNCHECKED_HASH, compiled
    stray = [p for p in build_dir.rglob("*.pyc") if ".cpython-313." not in p.name]
    assert stray == [], "bytecode of another Python is dead weight"


def test_the_layer_holds_the_package_and_its_dependencies_but_not_boto3(site: Path) -> None:
    package = ROOT / "layers/common/openhands_stop"
    expected = {p.relative_to(package) for p in package.rglob("*.py")}
    shipped = {
        p.relative_to(site / "openhands_stop") for p in (site / "openhands_stop").rglob("*.py")
    }
    assert shipped == expected
    for name in ("fastapi", "mangum", "aws_lambda_powertools", "pydantic", "aws_xray_sdk"):
        assert (site / name).is_dir(), name
    for name in ("boto3", "s3transfer"):
        assert not (site / name).exists(), f"{name} is not used by the function"
    assert not (site / "prune_botocore.py").exists(), "a build tool, not part of the layer"


def test_the_layer_s_botocore_is_the_pinned_one_with_our_services_alone(site: Path) -> None:
    requirements = (ROOT / "layers/common/requirements.txt").read_text("utf-8")
    pinned = re.search(r"^botocore==(\S+)$", requirements, re.MULTILINE)
    assert pinned is not None
    assert (site / f"botocore-{pinned.group(1)}.dist-info").is_dir()
    data = site / "botocore" / "data"
    kept = sorted(clients.LAYER_BOTOCORE_SERVICES)
    assert sorted(p.name for p in data.iterdir() if p.is_dir()) == kept
    endpoints = json.loads((data / "endpoints.json").read_text("utf-8"))
    for partition in endpoints["partitions"]:
        assert sorted(partition["services"]) == kept


def test_the_function_artifact_is_the_handler_module_alone(build_dir: Path) -> None:
    artifact = build_dir / "StopConversationFunction"
    files = {str(p.relative_to(artifact)) for p in artifact.rglob("*") if p.is_file()}
    assert files == {"app.py", "__pycache__/app.cpython-313.pyc"}


def test_the_layer_size_is_recorded_and_well_within_lambda_limits(
    build_dir: Path, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    layer = build_dir / "DependenciesLayer"
    files = [p for p in sorted(layer.rglob("*")) if p.is_file()]
    unzipped = sum(p.stat().st_size for p in files)
    archive = tmp_path / "layer.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in files:
            bundle.write(path, path.relative_to(layer))
    zipped = archive.stat().st_size
    sizes = {"layer_unzipped_bytes": unzipped, "layer_zipped_bytes": zipped, "files": len(files)}
    record_property("layer_sizes", sizes)
    print(json.dumps(sizes))
    # Lambda allows 250 MB unzipped for function and layers together; stay far below it.
    assert unzipped < 50 * 2**20
    assert zipped < 15 * 2**20


def test_the_pre_traffic_hook_artifact_is_its_module_alone(build_dir: Path) -> None:
    """The hook uses the runtime's boto3: no layer, no dependencies of its own."""
    artifact = build_dir / "PreTrafficHookFunction"
    files = {str(p.relative_to(artifact)) for p in artifact.rglob("*") if p.is_file()}
    assert files == {"app.py", "__pycache__/app.cpython-313.pyc"}


def test_make_sam_local_uses_the_build_output(build_dir: Path, tmp_path: Path) -> None:
    """The local template sits beside the built one, so its code paths resolve the same."""
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "sam-local",
            f"SAM_BUILD_DIR={build_dir}",
            f"SAM_LOCAL_ENV={tmp_path / 'env.json'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    local = json.loads((build_dir / "template-sam-local.yaml").read_text())
    function = local["Resources"]["StopConversationFunction"]["Properties"]
    assert (build_dir / function["CodeUri"] / "app.py").is_file()
    assert "AWS_ENDPOINT_URL" in function["Environment"]["Variables"]
