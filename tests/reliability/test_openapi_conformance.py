"""schemathesis against the app's own OpenAPI document, in process (ASGI): every answer,
with and without the key, conforms to the documented status codes and schemas."""

from __future__ import annotations

from collections import Counter
from typing import Any

import schemathesis
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode

from local.emulation import DEMO_SESSION_KEY, Stack, seed
from tests.reliability.profile import HYPOTHESIS
from tests.reliability.support import Evidence

ROUTE = "/api/conversations/{conversation_id}/stop"


def test_every_answer_conforms_to_the_openapi_document(
    stack: Stack, app: FastAPI, evidence: Evidence
) -> None:
    seed(stack)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operation = schema[ROUTE]["POST"]
    statuses: Counter[int] = Counter()
    documented = {int(code) for code in app.openapi()["paths"][ROUTE]["post"]["responses"]}

    @HYPOTHESIS
    @given(
        case=st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        ),
        key=st.sampled_from([DEMO_SESSION_KEY, None, "wrong"]),
        known=st.sampled_from([None, "demo-running", "demo-starting", "demo-stopped", "bad id!"]),
    )
    def check(case: Any, key: str | None, known: str | None) -> None:
        positive = case.meta.generation.mode == GenerationMode.POSITIVE
        if known is not None and positive == (known != "bad id!"):
            case.path_parameters = {"conversation_id": known}
        headers = {} if key is None else {"X-Session-API-Key": key}
        response = case.call_and_validate(headers=headers)
        statuses[response.status_code] += 1
        assert response.status_code in documented

    check()
    # Whatever was generated, the invalid-id answer (422) is checked against the document too.
    for cid in ("bad id!", "a" * 129, "é"):
        case = operation.Case(path_parameters={"conversation_id": cid})
        response = case.call_and_validate(headers={"X-Session-API-Key": DEMO_SESSION_KEY})
        statuses[response.status_code] += 1
        assert response.status_code == 422
    assert statuses[200] > 0
    assert statuses[401] > 0
    assert statuses[422] > 0
    shown = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
    evidence(
        "Hostile input",
        "schemathesis against the app's OpenAPI document (ASGI, in process), valid and invalid "
        "data, with the key, a wrong one, none",
        f"{sum(statuses.values())} generated requests ({shown}); every status documented, "
        "every body valid against its schema, no server error",
    )
