"""The app's OpenAPI document for the route is the seed's, plus the answers we add."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from moto import mock_aws
from openhands_stop.edge.app import create_app
from openhands_stop.edge.settings import RouteSettings
from openhands_stop.wiring import build_service

from local.emulation import ROOT, create_stack

SHARED_SEED = ROOT.parent / "shared" / "seed" / "stop-conversation.openhands-api.md"
# A copy travels with the repo, for clones that have no shared/ beside them.
SEED = ROOT / "docs" / "contract" / "stop-conversation.openhands-api.md"
PATH = "/api/conversations/{conversation_id}/stop"


def seed_document() -> dict[str, Any]:
    text = SEED.read_text(encoding="utf-8")
    block = re.search(r"````yaml[^\n]*\n(.*?)````", text, re.DOTALL)
    assert block, "the seed's OpenAPI block"
    document: dict[str, Any] = yaml.safe_load(block.group(1))
    return document


@pytest.fixture(scope="module")
def seed() -> dict[str, Any]:
    return seed_document()


@pytest.mark.skipif(not SHARED_SEED.exists(), reason="no shared/ beside this clone")
def test_the_repos_copy_of_the_seed_is_the_shared_one() -> None:
    assert SEED.read_text(encoding="utf-8") == SHARED_SEED.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def ours() -> dict[str, Any]:
    # The schema comes from the routes alone: a service that no request reaches will do.
    with mock_aws():
        env = create_stack(None, suffix="-openapi").function_environment()
        document: dict[str, Any] = create_app(
            build_service(RouteSettings.from_environment(env))
        ).openapi()
    return document


def operation(document: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = document["paths"][PATH]["post"]
    return op


def test_the_route_is_the_only_path_and_post_its_only_method(ours: dict[str, Any]) -> None:
    assert list(ours["paths"]) == [PATH]
    assert list(ours["paths"][PATH]) == ["post"]


@pytest.mark.parametrize("field", ["operationId", "summary", "description", "security"])
def test_operation_fields_match(seed: dict[str, Any], ours: dict[str, Any], field: str) -> None:
    assert operation(ours)[field] == operation(seed)[field]


def test_the_parameter_matches_and_adds_only_validation(
    seed: dict[str, Any], ours: dict[str, Any]
) -> None:
    [theirs] = operation(seed)["parameters"]
    [mine] = operation(ours)["parameters"]
    assert {k: mine[k] for k in ("name", "in", "required")} == {
        k: theirs[k] for k in ("name", "in", "required")
    }
    assert {k: mine["schema"][k] for k in theirs["schema"]} == theirs["schema"]
    assert mine["schema"]["pattern"] == "^[A-Za-z0-9_-]{1,128}$"
    assert (mine["schema"]["minLength"], mine["schema"]["maxLength"]) == (1, 128)


@pytest.mark.parametrize("status", ["200", "422"])
def test_the_seeds_responses_are_unchanged(
    seed: dict[str, Any], ours: dict[str, Any], status: str
) -> None:
    assert operation(ours)["responses"][status] == operation(seed)["responses"][status]


@pytest.mark.parametrize(
    "name", ["ConversationResponse", "HTTPValidationError", "ConversationStatus"]
)
def test_schemas_match_exactly(seed: dict[str, Any], ours: dict[str, Any], name: str) -> None:
    assert ours["components"]["schemas"][name] == seed["components"]["schemas"][name]


def test_validation_error_keeps_the_seeds_fields(
    seed: dict[str, Any], ours: dict[str, Any]
) -> None:
    theirs = seed["components"]["schemas"]["ValidationError"]
    mine = ours["components"]["schemas"]["ValidationError"]
    assert mine["required"] == theirs["required"]
    for field, schema in theirs["properties"].items():
        assert mine["properties"][field] == schema


def test_the_security_scheme_matches(seed: dict[str, Any], ours: dict[str, Any]) -> None:
    assert ours["components"]["securitySchemes"] == seed["components"]["securitySchemes"]


def test_the_answers_we_add_are_documented(ours: dict[str, Any]) -> None:
    responses = operation(ours)["responses"]
    assert responses["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Unauthorized"
    }
    for status in ("500", "503"):
        assert responses[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/StopFailed"
        }
    assert "Retry-After" in responses["503"]["headers"]


def test_the_local_server_is_the_seeds(seed: dict[str, Any], ours: dict[str, Any]) -> None:
    local = [s for s in seed["servers"] if "localhost" in s["url"]]
    assert ours["servers"] == local
