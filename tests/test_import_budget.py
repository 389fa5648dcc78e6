"""Import discipline of the Lambda handler: what a cold start loads, and that it stays offline.

Not a timing test: it checks *what* importing the handler module does, in a fresh interpreter,
so that a change cannot quietly pull a heavy or network-bound module into every cold start
(the figures themselves are ``make bench``'s).
"""

from __future__ import annotations

import json

import pytest
from openhands_stop.aws import clients

from tests.support import run_beside_handler

# Modules a cold start must not load: tracing SDKs before they are used, boto3's resource
# layer (botocore clients do), pydantic's v1 compatibility package (FastAPI would import it
# only to check for v1 models), servers, test doubles, other HTTP stacks.
FORBIDDEN = (
    "aws_xray_sdk",
    "pydantic.v1",
    "boto3",
    "boto3.resources",
    "uvicorn",
    "moto",
    "httpx",
    "requests",
    "werkzeug",
    "flask",
    "aiohttp",
    "yaml",
)

# Run in a fresh interpreter: connections and name lookups are refused and recorded before
# the handler module is imported, then the module names it loaded are reported.
_CHILD = r"""
import gc, json, socket, sys

attempts = []

class GuardedSocket(socket.socket):
    # Making a socket is local (Mangum's event loop makes a self-pipe, urllib3 binds an IPv6
    # socket to ::1 to learn whether IPv6 exists); reaching anything through one is network.
    def connect(self, address):
        attempts.append(f"connect {address}")
        raise OSError("no connection at import")

    def connect_ex(self, address):
        attempts.append(f"connect {address}")
        raise OSError("no connection at import")

    def sendto(self, *args):
        attempts.append("sendto")
        raise OSError("no datagram at import")

def refuse(name):
    def refused(*args, **kwargs):
        attempts.append(name)
        raise OSError(f"no {name} at import")
    return refused

socket.socket = GuardedSocket
socket.create_connection = refuse("create_connection")
socket.getaddrinfo = refuse("getaddrinfo")
socket.gethostbyname = refuse("gethostbyname")

import app

print(json.dumps({
    "attempts": attempts,
    # A name mapped to None is an import refused, not a module loaded.
    "modules": sorted(name for name, module in sys.modules.items() if module is not None),
    "handler_callable": callable(app.handler),
    "gc_enabled": gc.isenabled(),
}))
"""


def _import_handler_in_fresh_interpreter() -> dict[str, object]:
    completed = run_beside_handler(_CHILD)
    assert completed.returncode == 0, completed.stderr
    report: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture(scope="module")
def cold_import() -> dict[str, object]:
    return _import_handler_in_fresh_interpreter()


def test_importing_the_handler_makes_it_ready(cold_import: dict[str, object]) -> None:
    assert cold_import["handler_callable"] is True


def test_the_cycle_collector_is_back_on_once_the_handler_is_built(
    cold_import: dict[str, object],
) -> None:
    """Init runs without it (a cold-start saving); a process left without it would keep
    every reference cycle its requests make."""
    assert cold_import["gc_enabled"] is True


def test_importing_the_handler_connects_nowhere_and_resolves_no_name(
    cold_import: dict[str, object],
) -> None:
    """Ready for SnapStart: init builds clients and the app, and fetches nothing (the session
    key is read on the first request that presents one)."""
    assert cold_import["attempts"] == []


def test_importing_the_handler_loads_no_heavy_or_network_module(
    cold_import: dict[str, object],
) -> None:
    modules = set(cold_import["modules"])  # type: ignore[call-overload]
    loaded = sorted(
        name
        for name in modules
        if any(name == banned or name.startswith(f"{banned}.") for banned in FORBIDDEN)
    )
    assert loaded == []


def test_the_session_makes_clients_for_our_three_services() -> None:
    made = {
        "dynamodb": clients.dynamodb_client(),
        "sqs": clients.sqs_client(),
        "secretsmanager": clients.secretsmanager_client(),
    }
    for service, client in made.items():
        assert client.meta.service_model.service_name == service
        assert getattr(client.meta.config, "user_agent_extra", None) == clients.USER_AGENT_EXTRA
    assert set(made) == set(clients.SERVICES)


def test_a_failed_init_still_turns_the_cycle_collector_back_on() -> None:
    code = (
        "import gc\n"
        "try:\n"
        "    import app\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, gc.isenabled())\n"
    )
    completed = run_beside_handler(code, function_env={})
    assert completed.stdout.split() == ["ValidationError", "True"], completed.stderr
