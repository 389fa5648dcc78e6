"""Hostile input to the Lambda handler (the function template.yaml deploys): whatever the
event, the handler answers, never with a 5xx, and without the key nothing reaches DynamoDB
or SQS."""

from __future__ import annotations

import base64
import copy
import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openhands_stop.domain.models import CONVERSATION_ID_PATTERN

from local.emulation import DEMO_SESSION_KEY, ROOT
from tests.reliability.profile import HYPOTHESIS
from tests.reliability.support import Evidence
from tests.support import AwsCallCounter

Handler = Callable[[dict[str, Any]], dict[str, Any]]
TEMPLATES = {
    "HTTP API v2": json.loads((ROOT / "events/stop-running.json").read_text()),
    "REST API v1": json.loads((ROOT / "events/stop-running-rest-api.json").read_text()),
    "Function URL": json.loads((ROOT / "events/stop-running-function-url.json").read_text()),
}
BAD_INPUT_STATUSES = {400, 401, 404, 405, 422}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.binary(max_size=16).map(lambda b: b.decode("latin-1")),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
EVENT_KEYS = [
    "version", "routeKey", "rawPath", "rawQueryString", "headers", "requestContext", "body",
    "isBase64Encoded", "httpMethod", "path", "resource", "multiValueHeaders",
    "queryStringParameters", "multiValueQueryStringParameters", "pathParameters", "cookies",
]  # fmt: skip

hostile_ids = st.one_of(
    st.from_regex(CONVERSATION_ID_PATTERN, fullmatch=True),
    st.sampled_from(["..", "../etc/passwd", "a/b", "%2F", "a%2Fb", "a?b", "a#b", "a b", ".", ""]),
    st.text(max_size=40),  # unicode, control characters, surrogates excluded by JSON
    st.integers(129, 10_240).map(lambda n: "a" * n),  # long ids, up to 10 KB
    st.integers(1, 10_240).map(lambda n: "é" * n),
)
methods = st.one_of(
    st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "post"]),
    st.text(min_size=1, max_size=10),
)
keys = st.sampled_from([DEMO_SESSION_KEY, None, "", "wrong", DEMO_SESSION_KEY + " ", "a" * 5000])
extra_headers = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True).filter(
        lambda name: name not in {"x-session-api-key", "content-length", "host"}
    ),
    st.one_of(st.text(max_size=50), st.integers(0, 300_000).map(lambda n: "h" * n)),
    max_size=4,
)
bodies = st.one_of(
    st.none(),
    st.text(max_size=200),
    st.integers(0, 1_000_000).map(lambda n: "b" * n),
    st.binary(max_size=300).map(lambda b: ("b64", base64.b64encode(b).decode())),
    st.sampled_from([("b64", "//79/w=="), ("b64", "not base64!"), ("b64", "gA==")]),
)


def _build(
    shape: str, *, method: str, path: str, key: str | None, headers: dict[str, str], body: Any
) -> dict[str, Any]:
    event: dict[str, Any] = copy.deepcopy(TEMPLATES[shape])
    all_headers = dict(headers)
    if key is not None:
        all_headers["x-session-api-key"] = key
    is_b64 = isinstance(body, tuple)
    event["body"] = body[1] if is_b64 else body
    event["isBase64Encoded"] = is_b64
    if shape == "REST API v1":
        event["httpMethod"] = method
        event["path"] = path
        event["headers"] = all_headers
        event["multiValueHeaders"] = {name: [value] for name, value in all_headers.items()}
    else:
        event["requestContext"]["http"]["method"] = method
        event["requestContext"]["http"]["path"] = path
        event["rawPath"] = path
        event["headers"] = all_headers
    return event


@pytest.mark.parametrize("shape", sorted(TEMPLATES))
@pytest.mark.parametrize("method", [[], {}, ["POST"], {"POST": 1}])
def test_unreadable_method_is_a_400_not_a_500(
    lambda_handler: Handler, aws_calls: AwsCallCounter, shape: str, method: Any
) -> None:
    """Mangum passes a list or object method through to Starlette, whose router raises."""
    event = copy.deepcopy(TEMPLATES[shape])
    if shape == "REST API v1":
        event["httpMethod"] = method
    else:
        event["requestContext"]["http"]["method"] = method
    response = lambda_handler(event)
    assert response["statusCode"] == 400
    assert json.loads(response["body"]) == {"detail": "Bad Request"}
    assert aws_calls.total == 0


@pytest.mark.parametrize("event", [None, [], "event", {}, {"version": "2.0"}, {"httpMethod": 1}])
def test_unknown_event_shape_is_a_400(lambda_handler: Handler, event: Any) -> None:
    """Mangum raises when it cannot tell the event's source: the handler answers instead."""
    response = lambda_handler(event)
    assert response["statusCode"] == 400
    assert json.loads(response["body"]) == {"detail": "Bad Request"}


def _calls(counter: AwsCallCounter) -> int:
    return counter.of("dynamodb") + counter.of("sqs")


class Tally:
    """What the property tests saw, for the report."""

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()

    def __str__(self) -> str:
        shown = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return f"{sum(self.statuses.values())} events ({shown})"


def test_arbitrary_events_never_raise_nor_reach_aws(
    lambda_handler: Handler, aws_calls: AwsCallCounter, evidence: Evidence
) -> None:
    tally = Tally()

    @HYPOTHESIS
    @given(
        event=st.one_of(
            json_values,
            st.dictionaries(st.sampled_from(EVENT_KEYS), json_values, max_size=8),
        )
    )
    def check(event: Any) -> None:
        before = _calls(aws_calls)
        response = lambda_handler(event)
        tally.statuses[response["statusCode"]] += 1
        assert response["statusCode"] in BAD_INPUT_STATUSES
        assert _calls(aws_calls) == before

    check()
    evidence("Hostile input", "arbitrary JSON values and unknown event shapes", f"{tally}; "
             "never raised, never 5xx, 0 DynamoDB/SQS calls")  # fmt: skip


def test_wrong_typed_or_missing_fields_never_raise(
    lambda_handler: Handler, aws_calls: AwsCallCounter, evidence: Evidence
) -> None:
    tally = Tally()

    @HYPOTHESIS
    @given(
        shape=st.sampled_from(sorted(TEMPLATES)),
        field=st.sampled_from(EVENT_KEYS),
        replacement=st.one_of(st.just("<missing>"), json_values),
        nested=st.booleans(),
    )
    def check(shape: str, field: str, replacement: Any, nested: bool) -> None:
        event = copy.deepcopy(TEMPLATES[shape])
        event["headers"] = {"x-session-api-key": "wrong"}
        if "multiValueHeaders" in event:
            event["multiValueHeaders"] = {"x-session-api-key": ["wrong"]}
        target = event["requestContext"] if nested and "requestContext" in event else event
        if replacement == "<missing>":
            target.pop(field, None)
            target.pop("http", None) if nested else None
        else:
            target[field] = replacement
        before = _calls(aws_calls)
        response = lambda_handler(event)
        tally.statuses[response["statusCode"]] += 1
        assert response["statusCode"] in BAD_INPUT_STATUSES
        assert _calls(aws_calls) == before  # the key is wrong: nothing may be touched

    check()
    evidence("Hostile input", "valid events with a field missing or of the wrong type "
             "(v2, REST v1, Function URL)", f"{tally}; never raised, never 5xx, 0 "
             "DynamoDB/SQS calls")  # fmt: skip


def test_hostile_methods_paths_ids_headers_and_bodies(
    lambda_handler: Handler, aws_calls: AwsCallCounter, evidence: Evidence
) -> None:
    tally = Tally()
    authenticated_writes = Counter[str]()

    @HYPOTHESIS
    @given(
        shape=st.sampled_from(sorted(TEMPLATES)),
        method=methods,
        cid=hostile_ids,
        other_path=st.one_of(
            st.none(), st.none(), st.none(), st.text(max_size=60).map(lambda p: "/" + p)
        ),
        key=st.one_of(st.just(DEMO_SESSION_KEY), keys),
        headers=extra_headers,
        body=bodies,
    )
    def check(  # noqa: PLR0917 - one argument per strategy
        shape: str,
        method: str,
        cid: str,
        other_path: str | None,
        key: str | None,
        headers: dict[str, str],
        body: Any,
    ) -> None:
        path = other_path or f"/api/conversations/{cid}/stop"
        event = _build(shape, method=method, path=path, key=key, headers=headers, body=body)
        before = _calls(aws_calls)
        response = lambda_handler(event)
        status = response["statusCode"]
        tally.statuses[status] += 1
        touched = _calls(aws_calls) - before
        assert status < 500
        if key != DEMO_SESSION_KEY:
            assert status in BAD_INPUT_STATUSES
            assert touched == 0
        valid = (
            other_path is None and method == "POST" and re.fullmatch(CONVERSATION_ID_PATTERN, cid)
        )
        if valid and key == DEMO_SESSION_KEY:
            assert status == 200
            authenticated_writes["reached AWS"] += 1
        elif status != 200:
            assert touched == 0
            assert status in BAD_INPUT_STATUSES

    check()
    evidence("Hostile input", "other methods and paths, ids with path characters, unicode, "
             "10 KB ids, huge headers (300 KB) and bodies (1 MB), base64 bodies that are not "
             "UTF-8, right/wrong/absent keys", f"{tally}; never raised, never 5xx; only "
             f"authenticated valid stops reached DynamoDB ({authenticated_writes['reached AWS']})"
             )  # fmt: skip
