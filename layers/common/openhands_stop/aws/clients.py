"""botocore clients built once per process, with retries and timeouts chosen on purpose.

Standard retry mode with a bounded number of attempts in all (``total_max_attempts``:
botocore's ``max_attempts`` counts retries) and short connect and read timeouts, so that the
worst case of a warm stop, its write and its send each failing every attempt with backoff,
fits inside the function's timeout: a slow dependency becomes a 503 with ``Retry-After``
rather than a Lambda timeout. ``CLIENT_CONFIG`` is the one source of those numbers;
tests/reliability/test_retry_budget.py and tests/template/test_template.py derive the worst
case from it and compare it with template.yaml's ``Timeout``. ``AWS_ENDPOINT_URL`` (read by
botocore itself) points every client at a local emulation.

Client-side parameter validation is off: our adapters build every request from fixed shapes
and AWS validates each request anyway (a bad one still fails, as a non-transient
``ClientError`` instead of a ``ParamValidationError``: the same non-transient
DependencyFailure either way), while walking each request against the model is a measurable
part of every call (docs/performance.md). In the Lambda layer, botocore itself carries only the
models of ``LAYER_BOTOCORE_SERVICES`` (``layers/common/prune_botocore.py``), so a new session
reads nothing about other services.

Creating a client reads botocore's bundled model files and nothing else: no network.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import botocore.session
from botocore.config import Config

from openhands_stop.constants import LONG_POLL_SECONDS_MAX

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

# At DEBUG, botocore logs every response body, and GetSecretValue's holds the session key:
# whatever the function's log level (AWS_LAMBDA_LOG_LEVEL=DEBUG included), never below INFO.
logging.getLogger("botocore.parsers").setLevel(logging.INFO)

USER_AGENT_EXTRA = "openhands-stop"
"""Marks our clients' requests (in AWS logs, and for tests that count our calls)."""

SERVICES = ("dynamodb", "secretsmanager", "sqs")
"""The services this package makes clients for."""

LAYER_BOTOCORE_SERVICES = (*SERVICES, "xray")
"""Every service a botocore client is made for in the function's process, so the ones whose
models the layer's botocore keeps: ours, and X-Ray, for which the X-Ray SDK makes a client of
its own at init (to fetch sampling rules) when tracing is on."""

CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 3},
    connect_timeout=0.5,
    read_timeout=0.7,
    tcp_keepalive=True,
    user_agent_extra=USER_AGENT_EXTRA,
    parameter_validation=False,
)


def _client(service: str) -> Any:
    # One botocore session per process: a boto3 Session would load the same data again.
    return _session().create_client(service, config=CLIENT_CONFIG)


_SESSION: botocore.session.Session | None = None


def _session() -> botocore.session.Session:
    global _SESSION  # noqa: PLW0603 - one session per process is the point
    if _SESSION is None:
        _SESSION = botocore.session.get_session()
    return _SESSION


def dynamodb_client() -> DynamoDBClient:
    client: DynamoDBClient = _client("dynamodb")
    return client


def sqs_client() -> SQSClient:
    client: SQSClient = _client("sqs")
    return client


def secretsmanager_client() -> SecretsManagerClient:
    client: SecretsManagerClient = _client("secretsmanager")
    return client


LONG_POLL_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=2,
    # A long poll holds the response up to LONG_POLL_SECONDS_MAX by design: the read timeout
    # must outlast it, or every quiet poll would end in a timeout and a retry.
    read_timeout=LONG_POLL_SECONDS_MAX + 10,
    tcp_keepalive=True,
    user_agent_extra=USER_AGENT_EXTRA,
)


def long_poll_sqs_client() -> SQSClient:
    """The agent worker's SQS client: same session and marker, a read timeout above the
    longest long poll."""
    created: Any = _session().create_client("sqs", config=LONG_POLL_CLIENT_CONFIG)
    client: SQSClient = created
    return client
