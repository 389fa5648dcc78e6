"""One measurement in a fresh interpreter: run by ``benchmarks.run``, never imported.

Started as ``python -B -S -P probe.py MODE RESULT_FILE [ARGS]`` with ``PYTHONPATH`` set to one
packaged artifact (function, layer, runtime), so the handler module is imported exactly as
Lambda imports it: from read-only directories carrying bytecode. Only the standard library is
imported before the handler (``time``, ``sys``, ``os``, ``array``), so the import figure is
the handler's alone. Modes:

- ``init``: import the handler module (``app``), which makes it ready; time and peak RSS,
  and the artifact's modules that did not load from this interpreter's bytecode (none should).
- ``importtime``: the same import, run under ``-X importtime``; a marker line on stderr
  separates the handler's imports from the interpreter's and the probe's own.
- ``cold``: import, then the first response to a real stop, AWS being moto's server on
  loopback (``AWS_ENDPOINT_URL``); the response must be a 200.
- ``warm http``: AWS answered in process by a canned HTTP response per operation (a
  ``before-send`` hook on every botocore client): no network, but all the AWS SDK's own work
  (serialising, signing, parsing); the first request, then warm ones (each timed), RSS.
- ``warm sdk``: AWS answered at the SDK's door (``_make_api_call``) with canned parsed
  responses: the handler's own code and framework alone.
- ``calls``: AWS in moto's server; counts the API calls (``before-call``, once per operation,
  retries excluded) each kind of request makes.
"""

import os
import sys
import time
from array import array

_T0 = time.perf_counter()


def _rss_kib() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") // 1024


def _peak_rss_kib() -> int:
    # VmHWM is this process's own peak; getrusage's maxrss would carry the parent's from fork.
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


class LambdaContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    function_name = "StopConversationFunction"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:StopConversationFunction"
    memory_limit_in_mb = 512
    log_group_name = "/aws/lambda/StopConversationFunction"
    log_stream_name = "bench"

    def __init__(self, request_id: str) -> None:
        self.aws_request_id = request_id

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def _event(conversation_id: str, key: str | None) -> dict:  # type: ignore[type-arg]
    """An HTTP API (payload 2.0) event for the stop route, as API Gateway sends it."""
    path = f"/api/conversations/{conversation_id}/stop"
    headers = {
        "accept": "application/json",
        "content-length": "0",
        "host": "abc123.execute-api.us-east-1.amazonaws.com",
        "user-agent": "bench",
        "x-forwarded-for": "203.0.113.10",
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    }
    if key is not None:
        headers["x-session-api-key"] = key
    return {
        "version": "2.0",
        "routeKey": "POST /api/conversations/{conversation_id}/stop",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": "POST",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.10",
                "userAgent": "bench",
            },
            "requestId": "bench-request",
            "routeKey": "POST /api/conversations/{conversation_id}/stop",
            "stage": "$default",
            "time": "29/Nov/2026:21:30:00 +0000",
            "timeEpoch": 1795987800000,
        },
        "pathParameters": {"conversation_id": conversation_id},
        "isBase64Encoded": False,
    }


_IMPORT_CPU_S: list[float] = []


def _import_handler():  # type: ignore[no-untyped-def]
    start, start_cpu = time.perf_counter(), time.process_time()
    import app  # the handler module, first on PYTHONPATH as in /var/task

    _IMPORT_CPU_S.append(time.process_time() - start_cpu)
    return app.handler, time.perf_counter() - start


def _hook_every_client(register) -> None:  # type: ignore[no-untyped-def]
    """Call ``register(events)`` for every botocore client made from now on (boto3's too)."""
    import botocore.client

    original = botocore.client.BaseClient.__init__

    def init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        original(self, *args, **kwargs)
        register(self.meta.events)

    botocore.client.BaseClient.__init__ = init  # type: ignore[method-assign]


def _stub_aws(key: str) -> None:
    """Answer every AWS call in process with a canned success, as if AWS took no time."""
    import json

    from botocore.awsrequest import AWSResponse

    running = {"conversation_id": {"S": "bench-warm"}, "status": {"S": "RUNNING"}}
    bodies = {
        "dynamodb.UpdateItem": {"Attributes": running},
        "dynamodb.GetItem": {"Item": running},
        "sqs.SendMessage": {
            "MD5OfMessageBody": "0" * 32,
            "MessageId": "00000000-0000-0000-0000-000000000000",
            "SequenceNumber": "1",
        },
        "secrets-manager.GetSecretValue": {
            "ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:bench",
            "Name": "bench",
            "VersionId": "v1",
            "SecretString": key,
            "VersionStages": ["AWSCURRENT"],
            "CreatedDate": 1700000000.0,
        },
    }
    encoded = {name: json.dumps(body).encode() for name, body in bodies.items()}

    class Raw:
        def __init__(self, body: bytes) -> None:
            self._body = body

        def stream(self, **_: object) -> list[bytes]:
            return [self._body]

    def send(request, event_name, **_):  # type: ignore[no-untyped-def]
        # event_name is "before-send.<service id>.<operation>"
        body = encoded[event_name.split(".", 1)[1]]
        headers = {"x-amzn-requestid": "bench", "content-type": "application/x-amz-json-1.0"}
        return AWSResponse(request.url, 200, headers, Raw(body))

    _hook_every_client(lambda events: events.register("before-send", send))


def _stub_sdk(key: str) -> None:
    """Answer every AWS call at the SDK's door (``_make_api_call``) with a canned parsed
    response: what remains is the handler's own code and framework, no AWS SDK work."""
    from datetime import UTC, datetime

    import botocore.client

    running = {"conversation_id": {"S": "bench-warm"}, "status": {"S": "RUNNING"}}
    answers = {
        "UpdateItem": {"Attributes": running},
        "GetItem": {"Item": running},
        "SendMessage": {"MD5OfMessageBody": "0" * 32, "MessageId": "0", "SequenceNumber": "1"},
        "GetSecretValue": {
            "Name": "bench",
            "SecretString": key,
            "VersionStages": ["AWSCURRENT"],
            "CreatedDate": datetime.fromtimestamp(1700000000, UTC),
        },
    }

    def answer(self, operation_name, api_params):  # type: ignore[no-untyped-def]
        return answers[operation_name]

    botocore.client.BaseClient._make_api_call = answer  # type: ignore[method-assign]


def _count_calls(calls: list) -> None:  # type: ignore[type-arg]
    def count(model, **_):  # type: ignore[no-untyped-def]
        calls.append(f"{model.service_model.service_id}.{model.name}")

    _hook_every_client(lambda events: events.register("before-call", count))


def _invoke(handler, event, request_id: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    response = handler(event, LambdaContext(request_id))
    if not isinstance(response, dict):
        raise SystemExit(f"not a Lambda response: {response!r}")
    return response


def _init(result: dict, key: str) -> None:  # type: ignore[type-arg]
    _, result["import_s"] = _import_handler()
    result["peak_rss_kib"] = _peak_rss_kib()
    result["without_bytecode"] = _modules_without_bytecode()


IMPORTTIME_MARKER = "bench: the handler's imports follow"


def _importtime(result: dict, key: str) -> None:  # type: ignore[type-arg]
    sys.stderr.write(f"{IMPORTTIME_MARKER}\n")
    sys.stderr.flush()
    _, result["import_s"] = _import_handler()


def _modules_without_bytecode() -> list[str]:
    """The artifact's modules (from ``PYTHONPATH``) not loaded from this interpreter's
    bytecode, which Lambda would compile in memory on every cold start."""
    from importlib.util import MAGIC_NUMBER

    roots = tuple(os.path.join(p, "") for p in os.environ["PYTHONPATH"].split(os.pathsep))
    missing = []
    for name, module in list(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None) or ""
        if not (origin.endswith(".py") and origin.startswith(roots)):
            continue
        try:
            with open(spec.cached, "rb") as pyc:  # type: ignore[union-attr]
                magic = pyc.read(4)
        except (OSError, TypeError):
            magic = b""
        if magic != MAGIC_NUMBER:
            missing.append(name)
    return sorted(missing)


def _cold(result: dict, key: str) -> None:  # type: ignore[type-arg]
    handler, result["import_s"] = _import_handler()
    event = _event(sys.argv[3], key)
    start = time.perf_counter()
    response = _invoke(handler, event, "cold")
    result["first_s"] = time.perf_counter() - start
    result["status"] = response.get("statusCode")
    result["body"] = response.get("body")


def _warm(result: dict, key: str) -> None:  # type: ignore[type-arg]
    """Driven in lockstep by the parent: each line on stdin asks for that many warm requests,
    so the three implementations take turns through the whole run."""
    if sys.argv[3] == "sdk":
        _stub_sdk(key)
    else:
        _stub_aws(key)
    handler, result["import_s"] = _import_handler()
    event = _event("bench-warm", key)
    start = time.perf_counter()
    first = _invoke(handler, event, "first")
    result["first_s"] = time.perf_counter() - start
    result["status"] = first.get("statusCode")
    result["body"] = first.get("body")
    for i in range(20):  # settle lazily made things (caches, pools) before RSS is read
        _invoke(handler, event, f"settle-{i}")
    # The samples' storage is made before RSS is read: 20,000 timings as Python ints in
    # lists would themselves grow RSS by about 1.4 MB and be counted as the handler's.
    count = int(sys.argv[4])
    wall_samples = array("q", bytes(8 * count))
    cpu_samples = array("q", bytes(8 * count))
    rss_before = _rss_kib()
    wall, cpu = time.perf_counter_ns, time.process_time_ns
    done = 0
    _REPLY.write("ready\n")
    _REPLY.flush()
    while line := sys.stdin.readline():
        for _ in range(int(line)):
            context = LambdaContext(f"warm-{done}")
            start_wall, start_cpu = wall(), cpu()
            handler(event, context)
            cpu_samples[done] = cpu() - start_cpu
            wall_samples[done] = wall() - start_wall
            done += 1
        _REPLY.write("ok\n")
        _REPLY.flush()
    result["rss_growth_kib"] = _rss_kib() - rss_before
    result["warm_wall_ns"] = wall_samples[:done].tolist()
    result["warm_cpu_ns"] = cpu_samples[:done].tolist()


def _calls(result: dict, key: str) -> None:  # type: ignore[type-arg]
    calls: list = []  # type: ignore[type-arg]
    _count_calls(calls)
    handler, _ = _import_handler()
    running, running_too, stopped = sys.argv[3:6]
    counts = {}
    for label, conversation_id, presented in [
        ("cold_stop_running", running, key),
        ("warm_stop_running", running_too, key),
        ("warm_not_running", stopped, key),
        ("warm_missing_key", running_too, None),
        ("warm_wrong_key", running_too, "not-the-key"),
        ("warm_wrong_key_again", running_too, "not-the-key"),
    ]:
        del calls[:]
        response = _invoke(handler, _event(conversation_id, presented), label)
        counts[label] = {"status": response.get("statusCode"), "calls": list(calls)}
    result["counts"] = counts


_REPLY = sys.stdout


def main() -> None:
    mode, result_file = sys.argv[1], sys.argv[2]
    modes = {
        "init": _init,
        "importtime": _importtime,
        "cold": _cold,
        "warm": _warm,
        "calls": _calls,
    }
    result: dict = {"mode": mode}  # type: ignore[type-arg]
    # A handler's own logs (Powertools writes one line per request) are part of its cost,
    # but not of the report: they go to /dev/null, through the same code path.
    with open(os.devnull, "w", encoding="utf-8") as devnull:
        sys.stdout = devnull
        try:
            modes[mode](result, os.environ["BENCH_SESSION_KEY"])
        finally:
            sys.stdout = _REPLY
    result["import_cpu_s"] = _IMPORT_CPU_S[0] if _IMPORT_CPU_S else None
    import json

    with open(result_file, "w", encoding="utf-8") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
