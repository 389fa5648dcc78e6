"""An embedded AWS (moto's server on 127.0.0.1) with the stack's table, queue and secret.

The table is built from ``template.yaml``'s own key schema, so the emulation, the tests and
the deployed stack cannot drift apart.

Two of moto's gaps are closed where it runs (``moto_server`` here, which ``make run``, the load
and fleet runs and the wire tests use, and the tests' in-process stack): its DynamoDB item
writes are made atomic (``local.atomic_moto``), and its SQS FIFO long poll delivers a message
group as soon as the group unlocks, as SQS does, instead of keeping the groups that were in
flight when the poll began locked for its whole wait (``local.fifo_moto``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import yaml
from openhands_stop.edge.observability import SERVICE

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
FUNCTION_DIR = ROOT / "functions" / "stop_conversation"

REGION = "us-east-1"
TABLE_NAME = "conversations"
QUEUE_NAME = "cancel.fifo"
DEAD_LETTER_QUEUE_NAME = "cancel-dlq.fifo"
WORKER_QUEUE_INFIX = "_cancel-worker-"
"""Workers' queues are named ``<stack>_cancel-worker-<instance>.fifo``, as the template's
``WorkerQueuePrefix`` names them after the stack (whose name cannot hold ``_``)."""
STACK_NAME = "stack"
SECRET_NAME = "stop-conversation/session-api-key"  # noqa: S105 - a name, not a secret
# A key for the emulation only, the same one the sample events carry. Never a real secret.
DEMO_SESSION_KEY = "local-demo-session-key"

DEMO_CONVERSATIONS: Mapping[str, str] = {
    "demo-running": "RUNNING",
    "demo-starting": "STARTING",
    "demo-stopped": "STOPPED",
}

OFFLINE_FUNCTION_ENV: Mapping[str, str] = {
    "CONVERSATIONS_TABLE_NAME": TABLE_NAME,
    "CANCEL_QUEUE_URL": f"https://sqs.{REGION}.amazonaws.com/123456789012/{QUEUE_NAME}",
    "SESSION_API_KEY_SECRET_ID": SECRET_NAME,
    "POWERTOOLS_SERVICE_NAME": SERVICE,
}
"""The variables template.yaml gives the function, naming resources no stack backs: for
building the handler where it makes no AWS call (import checks, benchmarks with AWS stubbed)."""

AWS_DUMMY_ENV = {
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


class _CloudFormationLoader(yaml.SafeLoader):
    """Reads template.yaml, keeping !Ref, !GetAtt, !Sub ... as plain tagged values."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    return {name: value}


_CloudFormationLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        document: dict[str, Any] = yaml.load(handle, Loader=_CloudFormationLoader)  # noqa: S506
    return document


def table_definition(template: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The CreateTable arguments of the template's conversations table (schema only)."""
    resources = (template or load_template())["Resources"]
    properties = resources["ConversationsTable"]["Properties"]
    definition = {
        "KeySchema": properties["KeySchema"],
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "BillingMode": properties.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if "GlobalSecondaryIndexes" in properties:
        definition["GlobalSecondaryIndexes"] = properties["GlobalSecondaryIndexes"]
    return definition


@dataclass(frozen=True)
class Stack:
    """Names of the emulated stack's resources, and the function's environment for them."""

    endpoint_url: str | None
    table_name: str
    stack_queue_url: str
    dead_letter_queue_url: str
    secret_id: str
    worker_queue_prefix: str

    def function_environment(self) -> dict[str, str]:
        """The variables template.yaml gives the function (and its workers: the same
        table, queue and prefix), pointed at this emulation."""
        env = {
            **AWS_DUMMY_ENV,
            "CONVERSATIONS_TABLE_NAME": self.table_name,
            "CANCEL_QUEUE_URL": self.stack_queue_url,
            "WORKER_QUEUE_PREFIX": self.worker_queue_prefix,
            "SESSION_API_KEY_SECRET_ID": self.secret_id,
            "POWERTOOLS_SERVICE_NAME": SERVICE,
        }
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        return env

    def client(self, service: str) -> Any:
        factory: Any = boto3.client  # service is a runtime string: no typed overload applies
        return factory(service, region_name=REGION, endpoint_url=self.endpoint_url)


def create_stack(
    endpoint_url: str | None,
    *,
    session_key: str | None = DEMO_SESSION_KEY,
    suffix: str = "",
) -> Stack:
    """Create the table, the FIFO cancel queue with its dead-letter queue, and the secret.

    ``suffix`` gives every resource a fresh name (tests use one per test: moto's queues
    slow down as they grow, and PurgeQueue refuses a second purge within 60 s).
    """
    use_dummy_credentials()
    dynamodb = boto3.client("dynamodb", region_name=REGION, endpoint_url=endpoint_url)
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=endpoint_url)
    secrets = boto3.client("secretsmanager", region_name=REGION, endpoint_url=endpoint_url)
    table_name = f"{TABLE_NAME}{suffix}"
    dynamodb.create_table(TableName=table_name, **table_definition())
    fifo: dict[Any, str] = {"FifoQueue": "true"}
    dlq_url = sqs.create_queue(
        QueueName=DEAD_LETTER_QUEUE_NAME.replace(".fifo", f"{suffix}.fifo"), Attributes=fifo
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = f'{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"5"}}'
    queue_url = sqs.create_queue(
        QueueName=QUEUE_NAME.replace(".fifo", f"{suffix}.fifo"),
        Attributes={**fifo, "RedrivePolicy": redrive},
    )["QueueUrl"]
    secret_args: dict[str, Any] = {"Name": f"{SECRET_NAME}{suffix}"}
    if session_key is not None:
        secret_args["SecretString"] = session_key
    secret_arn = secrets.create_secret(**secret_args)["ARN"]
    prefix = f"{STACK_NAME}{suffix.replace('_', '-')}{WORKER_QUEUE_INFIX}"
    return Stack(endpoint_url, table_name, queue_url, dlq_url, secret_arn, prefix)


def seed(stack: Stack, conversations: Mapping[str, str] = DEMO_CONVERSATIONS) -> None:
    """Put conversations in the table with the given statuses."""
    use_dummy_credentials()
    dynamodb = stack.client("dynamodb")
    for conversation_id, status in conversations.items():
        dynamodb.put_item(
            TableName=stack.table_name,
            Item={"conversation_id": {"S": conversation_id}, "status": {"S": status}},
        )


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    """Until something listens on 127.0.0.1:``port``; fails if ``process`` exits first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


def stop_process(process: subprocess.Popen[Any], seconds: float = 10) -> None:
    """SIGTERM (a clean shutdown), then SIGKILL if it has not exited within ``seconds``."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def moto_server(port: int | None = None) -> Iterator[str]:
    """moto's server on 127.0.0.1, quiet, for as long as the block runs; yields its URL.

    Its DynamoDB item writes are made atomic, as DynamoDB's are (see ``local.atomic_moto``),
    and its FIFO long polls see groups unlock while they wait, as SQS's do (see
    ``local.fifo_moto``).
    """
    from moto.server import ThreadedMotoServer

    from local.atomic_moto import serialize_dynamodb_writes
    from local.fifo_moto import deliver_unlocked_fifo_groups

    serialize_dynamodb_writes()
    deliver_unlocked_fifo_groups()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    chosen = port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=chosen, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{chosen}"
    finally:
        server.stop()


def route_app(env: Mapping[str, str] | None = None) -> Any:
    """The stop route's ASGI app, as the function builds it: the package's app and service,
    settings from ``env`` (else this process's environment). The one place outside the
    function and the tests' fixtures that names the package's app, settings and wiring."""
    from openhands_stop.edge.app import create_app
    from openhands_stop.edge.settings import RouteSettings
    from openhands_stop.wiring import build_service

    return create_app(build_service(RouteSettings.from_environment(env)))


def _route_server(env: Mapping[str, str] | None, port: int, log_level: str) -> Any:
    import uvicorn

    config = uvicorn.Config(
        route_app(env), host="127.0.0.1", port=port, log_level=log_level, access_log=False
    )
    return uvicorn.Server(config)


@contextmanager
def serve_route(
    env: Mapping[str, str] | None = None, *, port: int | None = None, log_level: str = "error"
) -> Iterator[str]:
    """The stop route (``route_app(env)``) on uvicorn in a thread, on 127.0.0.1:``port`` (else
    a free port), for as long as the block runs; yields its URL."""
    server = _route_server(env, port or free_port(), log_level)
    thread = threading.Thread(target=server.run, name="stop-route", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    try:
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the stop route did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(15)


def run_route(port: int, env: Mapping[str, str] | None = None, *, log_level: str = "error") -> None:
    """The same server in the foreground, until Ctrl-C or SIGTERM (its clean shutdown):
    ``make run``'s, and a route in a process of its own (the load run's, the benchmark's)."""
    server = _route_server(env, port, log_level)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise SystemExit(f"the stop route did not start on 127.0.0.1:{port}")


def use_dummy_credentials() -> None:
    """Region and credentials for the emulation, unless the environment already has some."""
    for name, value in AWS_DUMMY_ENV.items():
        os.environ.setdefault(name, value)
