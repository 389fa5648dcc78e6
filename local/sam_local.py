"""``make sam-local``: the real ``sam local invoke`` and ``sam local start-api`` (Docker needed)
against ``make run``'s emulation.

Writes two files and prints the commands that use them:

- the ``--env-vars`` file: the function's table, queue, prefix and secret as ``make run``
  creates them, and ``AWS_ENDPOINT_URL`` pointing at its moto server at an address the
  Lambda container reaches (``127.0.0.1`` with ``--docker-network host`` on Linux;
  ``host.docker.internal`` on Docker Desktop);
- a local copy of the ``sam build`` output template (``template-sam-local.yaml`` beside it,
  so its code paths resolve the same), with two local-only changes the CLI needs: the
  function declares ``AWS_ENDPOINT_URL`` (``sam local`` passes a variable of ``--env-vars``
  only if the template declares it, and the deployed function must never have one), and an
  ``HttpApi`` event for the stop route (``start-api`` cannot follow the plain API Gateway
  resources to the ``live`` alias).

Credentials: the commands set dummy ones, so nothing reaches a real account.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from local.emulation import (
    AWS_DUMMY_ENV,
    QUEUE_NAME,
    REGION,
    ROOT,
    SECRET_NAME,
    TABLE_NAME,
    WORKER_QUEUE_INFIX,
    load_template,
)

FUNCTION = "StopConversationFunction"
MOTO_ACCOUNT = "123456789012"
STOP_PATH = "/api/conversations/{conversation_id}/stop"
LOCAL_TEMPLATE = "template-sam-local.yaml"


def env_vars(host: str, port: int) -> dict[str, dict[str, str]]:
    """The function's variables for ``make run``'s emulation, reached at ``host:port``."""
    endpoint = f"http://{host}:{port}"
    return {
        FUNCTION: {
            "AWS_ENDPOINT_URL": endpoint,
            "CONVERSATIONS_TABLE_NAME": TABLE_NAME,
            "CANCEL_QUEUE_URL": f"{endpoint}/{MOTO_ACCOUNT}/{QUEUE_NAME}",
            "WORKER_QUEUE_PREFIX": QUEUE_NAME.replace(".fifo", WORKER_QUEUE_INFIX),
            "SESSION_API_KEY_SECRET_ID": SECRET_NAME,
            "POWERTOOLS_TRACE_DISABLED": "true",
        }
    }


def local_template(built: dict[str, Any]) -> dict[str, Any]:
    """The built template with the function's local-only additions (see the module doc)."""
    function = built["Resources"][FUNCTION]["Properties"]
    variables = function.setdefault("Environment", {}).setdefault("Variables", {})
    variables["AWS_ENDPOINT_URL"] = ""  # declared for `sam local`; the env-vars file sets it
    function["Events"] = {
        "Stop": {"Type": "HttpApi", "Properties": {"Path": STOP_PATH, "Method": "POST"}}
    }
    return built


def commands(template: Path, env_file: Path, event: str, host: str) -> list[str]:
    credentials = " ".join(f"{k}={v}" for k, v in sorted(AWS_DUMMY_ENV.items()))
    network = (
        "--docker-network host"
        if host in ("127.0.0.1", "localhost")
        else "--add-host host.docker.internal:host-gateway"
    )
    common = f"--template {shlex.quote(str(template))} --env-vars {shlex.quote(str(env_file))}"
    sam = ".venv-sam/bin/sam"
    return [
        f"{credentials} {sam} local invoke {FUNCTION} {common} "
        f"--event {shlex.quote(event)} {network}",
        f"{credentials} {sam} local start-api {common} --port 3001 {network}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--event", default="events/stop-running.json")
    parser.add_argument("--env-vars", type=Path, default=Path(".aws-sam/sam-local-env.json"))
    parser.add_argument("--host", default="127.0.0.1", help="where the container reaches moto")
    parser.add_argument("--port", type=int, default=5000, help="make run's emulation port")
    parser.add_argument("--build-dir", type=Path, default=Path(".aws-sam/build"))
    args = parser.parse_args(argv)

    args.env_vars.parent.mkdir(parents=True, exist_ok=True)
    args.env_vars.write_text(json.dumps(env_vars(args.host, args.port), indent=2) + "\n")
    print(f"wrote {args.env_vars} (the function's settings for make run's emulation)")
    built = args.build_dir / "template.yaml"
    if not built.exists():
        print(f"{built} is missing: run `make build` first, then `make sam-local` again")
        return 1
    template = args.build_dir / LOCAL_TEMPLATE
    # JSON is YAML: the CLI reads it as it reads the built template.
    template.write_text(json.dumps(local_template(load_template(built)), indent=1) + "\n")
    print(f"wrote {template} (the built template, with what sam local needs to reach moto)")
    print(f"\nIn another terminal: make run   (the emulation on port {args.port}), then:\n")
    for command in commands(template, args.env_vars, args.event, args.host):
        print(f"  {command}")
    if (ROOT / args.event).exists() or Path(args.event).exists():
        print(f"\nstart-api serves POST http://127.0.0.1:3001{STOP_PATH} (region {REGION})")
        return 0
    print(f"no event {args.event}: choose one of events/", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
