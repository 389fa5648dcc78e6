"""The layer's botocore, cut down to our services, resolves and builds them as the full one.

``layers/common/prune_botocore.py`` runs on a copy of the botocore installed here: what it
keeps must give every region of every partition the same endpoint as botocore's own data,
and a session reading only the pruned data must make our clients as a full one does.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import botocore
import botocore.exceptions
import botocore.session
import pytest
from botocore.loaders import Loader
from botocore.regions import EndpointResolver
from openhands_stop.aws import clients

from local.emulation import AWS_DUMMY_ENV, OFFLINE_FUNCTION_ENV, ROOT
from tests.support import run_beside_handler

SCRIPT = ROOT / "layers" / "common" / "prune_botocore.py"
FULL_DATA = Path(botocore.__file__).parent / "data"
KEPT = clients.LAYER_BOTOCORE_SERVICES
# Services the function does not use, copied so that there is something to remove.
OTHERS = ("s3", "sts", "lambda")


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A botocore data folder as the layer's build leaves it."""
    botocore_dir = tmp_path_factory.mktemp("layer") / "botocore"
    data = botocore_dir / "data"
    data.mkdir(parents=True)
    for entry in FULL_DATA.iterdir():
        if entry.is_file():
            shutil.copy2(entry, data / entry.name)
    for service in (*KEPT, *OTHERS):
        shutil.copytree(FULL_DATA / service, data / service)
    completed = _run(botocore_dir, *KEPT)
    assert completed.returncode == 0, completed.stderr
    assert f"removed {len(OTHERS)} other services" in completed.stdout
    return data


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _endpoints(data: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((data / "endpoints.json").read_text("utf-8"))
    return loaded


def test_only_our_services_models_remain_beside_botocore_s_own_files(pruned: Path) -> None:
    folders = sorted(p.name for p in pruned.iterdir() if p.is_dir())
    assert folders == sorted(KEPT)
    top_level = sorted(p.name for p in pruned.iterdir() if p.is_file())
    assert top_level == sorted(p.name for p in FULL_DATA.iterdir() if p.is_file())


def test_endpoints_json_names_only_our_services_in_every_partition(pruned: Path) -> None:
    full, cut = _endpoints(FULL_DATA), _endpoints(pruned)
    assert (pruned / "endpoints.json").stat().st_size < 100_000
    for whole, kept in zip(full["partitions"], cut["partitions"], strict=True):  # type: ignore[call-overload]
        assert sorted(kept["services"]) == sorted(
            name for name in KEPT if name in whole["services"]
        )
        assert set(clients.SERVICES) <= set(kept["services"])
        assert {k: v for k, v in kept.items() if k != "services"} == {
            k: v for k, v in whole.items() if k != "services"
        }
        for name in kept["services"]:
            assert kept["services"][name] == whole["services"][name]


def test_every_region_of_every_partition_resolves_as_with_the_full_data(pruned: Path) -> None:
    full = EndpointResolver(_endpoints(FULL_DATA))
    cut = EndpointResolver(_endpoints(pruned))
    checked = 0
    for partition in _endpoints(FULL_DATA)["partitions"]:  # type: ignore[attr-defined]
        # Every listed region, and one the partition's pattern admits that no list names yet.
        unlisted = _unlisted_region(partition["regionRegex"])
        for region in [*partition["regions"], *([unlisted] if unlisted else [])]:
            for service in KEPT:
                for fips in (False, True):
                    for dualstack in (False, True):
                        expected = _outcome(full, service, region, fips, dualstack)
                        assert _outcome(cut, service, region, fips, dualstack) == expected
                        checked += 1
        assert cut.get_available_endpoints("dynamodb", partition["partition"]) == (
            full.get_available_endpoints("dynamodb", partition["partition"])
        )
    assert checked > 100


def _outcome(
    resolver: EndpointResolver, service: str, region: str, fips: bool, dualstack: bool
) -> object:
    """The endpoint, or the refusal (a variant no region offers is an error, both ways)."""
    try:
        return resolver.construct_endpoint(
            service, region, use_fips_endpoint=fips, use_dualstack_endpoint=dualstack
        )
    except botocore.exceptions.BotoCoreError as error:
        return f"{type(error).__name__}: {error}"


def _unlisted_region(pattern: str) -> str | None:
    for candidate in ("us-west-99", "eu-north-99", "cn-north-99", "us-gov-west-99"):
        if re.match(pattern, candidate):
            return candidate
    return None


def test_a_session_on_the_pruned_data_alone_makes_our_clients_as_a_full_one(
    pruned: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in AWS_DUMMY_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    only_pruned = botocore.session.get_session()
    only_pruned.register_component(
        "data_loader", Loader(extra_search_paths=[str(pruned)], include_default_search_paths=False)
    )
    full = botocore.session.get_session()
    for service in KEPT:
        for region in ("us-east-1", "eu-west-3", "cn-north-1", "us-gov-west-1", "us-west-99"):
            made = only_pruned.create_client(service, region_name=region)
            expected = full.create_client(service, region_name=region)
            assert made.meta.endpoint_url == expected.meta.endpoint_url
            assert made.meta.region_name == expected.meta.region_name
            assert made.meta.service_model.operation_names == (
                expected.meta.service_model.operation_names
            )
    with pytest.raises(botocore.exceptions.UnknownServiceError):
        only_pruned.create_client("s3", region_name="us-east-1")


def test_pruning_again_changes_nothing(pruned: Path) -> None:
    before = (pruned / "endpoints.json").read_bytes()
    completed = _run(pruned.parent, *KEPT)
    assert completed.returncode == 0, completed.stderr
    assert "removed 0 other services" in completed.stdout
    assert (pruned / "endpoints.json").read_bytes() == before


def test_a_service_without_a_model_stops_the_build(pruned: Path) -> None:
    completed = _run(pruned.parent, "dynamodb", "no-such-service")
    assert completed.returncode == 1
    assert "no model for no-such-service" in completed.stderr


def test_the_layer_build_keeps_the_services_the_package_makes_clients_for() -> None:
    makefile = (ROOT / "layers" / "common" / "Makefile").read_text("utf-8")
    match = re.search(r"^BOTOCORE_SERVICES\s*=\s*(.+)$", makefile, re.MULTILINE)
    assert match is not None
    assert sorted(match.group(1).split()) == sorted(KEPT)


_INIT_ON_PRUNED_DATA = """
import sys
import botocore.loaders

# botocore's own data folder is the pruned one: a model it lacks is a model the layer lacks.
botocore.loaders.Loader.BUILTIN_DATA_PATH = sys.argv[1]
import app

print(callable(app.handler))
"""


@pytest.mark.parametrize("tracing", ["off", "on"])
def test_the_handler_builds_on_the_pruned_botocore_alone(pruned: Path, tracing: str) -> None:
    """Every client made at init, ours and (with tracing on) the X-Ray SDK's, has its model."""
    trace_disabled = "false" if tracing == "on" else "true"
    completed = run_beside_handler(
        _INIT_ON_PRUNED_DATA,
        str(pruned),
        function_env={**OFFLINE_FUNCTION_ENV, "POWERTOOLS_TRACE_DISABLED": trace_disabled},
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split()[-1] == "True"
