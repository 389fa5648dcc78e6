"""A bounded load run of the stop route, loopback only: N stops over M conversations.

Three processes: moto's server (the emulation), the app on uvicorn (the local server, whose
RSS is measured), and this driver (several HTTP clients in threads, plus a thread draining
the cancel queue as it goes: moto's SQS slows as a queue grows). The request count is fixed
and the run is abandoned, as a failure, past ``--max-seconds``.

    python -m local.load --stops 10000 --conversations 1000 --clients 8 --json out.json

Checks: every answer 200, one transition per conversation, transitions equal to distinct
cancels delivered (each carrying the record's stop_id), RSS flat, and the session key absent
from everything the server wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from local.emulation import (
    AWS_DUMMY_ENV,
    ROOT,
    Stack,
    create_stack,
    free_port,
    run_route,
    stop_process,
    wait_for_port,
)

STOPPED_NOW = "Conversation stopped successfully"
RSS_GROWTH_LIMIT_MB = 25.0
WARMUP_REQUESTS = 200


@dataclass
class LoadResult:
    """The figures of one run; ``ok`` says whether every check held."""

    stops: int
    conversations: int
    clients: int
    requests: int = 0
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    transitions: int = 0
    stopped_records: int = 0
    cancels_delivered: int = 0
    distinct_cancels: int = 0
    cancels_with_wrong_stop_id: int = 0
    duration_seconds: float = 0.0
    throughput_rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    rss_start_mb: float = 0.0
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0
    server_log_bytes: int = 0
    server_error_lines: int = 0
    key_occurrences: int = 0
    completed: bool = False
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def _process(
    args: list[str], port: int, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "local.load", *args, "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, process)
            yield process
        finally:
            stop_process(process)


def _seed_running(stack: Stack, conversation_ids: list[str]) -> None:
    dynamodb = stack.client("dynamodb")
    for start in range(0, len(conversation_ids), 25):
        batch = conversation_ids[start : start + 25]
        requests = [
            {"PutRequest": {"Item": {"conversation_id": {"S": cid}, "status": {"S": "RUNNING"}}}}
            for cid in batch
        ]
        pending: Any = {stack.table_name: requests}
        while pending:
            pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems")


class _Drainer(threading.Thread):
    """Receives and deletes cancels while the load runs; keeps (sid, stop_id) of each."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self._sqs = stack.client("sqs")
        self._url = stack.stack_queue_url
        self.delivered: list[tuple[str, str]] = []
        self.stop_when_empty = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        empty_polls = 0
        try:
            while True:
                messages = self._sqs.receive_message(
                    QueueUrl=self._url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                ).get("Messages", [])
                if not messages:
                    empty_polls += 1
                    if self.stop_when_empty.is_set() and empty_polls >= 3:
                        return
                    continue
                empty_polls = 0
                for message in messages:
                    body = json.loads(message["Body"])
                    self.delivered.append((body["sid"], body["stop_id"]))
                self._sqs.delete_message_batch(
                    QueueUrl=self._url,
                    Entries=[
                        {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                        for n, m in enumerate(messages)
                    ],
                )
        except BaseException as error:  # reported, never swallowed
            self.error = error


def run_load(
    *, stops: int, conversations: int, clients: int, max_seconds: float, workdir: Path
) -> LoadResult:
    result = LoadResult(stops=stops, conversations=conversations, clients=clients)
    key = secrets.token_urlsafe(32)
    env = {**os.environ, **AWS_DUMMY_ENV}
    env.pop("AWS_ENDPOINT_URL", None)
    moto_port, app_port = free_port(), free_port()
    with _process(["moto"], moto_port, env, workdir / "moto.log"):
        endpoint = f"http://127.0.0.1:{moto_port}"
        stack = create_stack(endpoint, session_key=key, suffix=f"-load-{secrets.token_hex(4)}")
        ids = [f"load-{n:05d}" for n in range(conversations)]
        _seed_running(stack, ids)
        server_env = {**env, **stack.function_environment(), "AWS_ENDPOINT_URL": endpoint}
        server_log = workdir / "server.log"
        with _process(["serve"], app_port, server_env, server_log) as server:
            result.rss_start_mb = _rss_mb(server.pid)
            base_url = f"http://127.0.0.1:{app_port}"
            headers = {"X-Session-API-Key": key}
            with httpx.Client(base_url=base_url, headers=headers, timeout=30) as warm:
                for n in range(WARMUP_REQUESTS):  # unknown ids: the code paths, no records
                    warm.post(f"/api/conversations/warmup-{n}/stop").raise_for_status()
            result.rss_before_mb = _rss_mb(server.pid)

            drainer = _Drainer(stack)
            drainer.start()
            _drive(result, base_url, headers, ids, max_seconds)
            result.rss_after_mb = _rss_mb(server.pid)
            drainer.stop_when_empty.set()
            drainer.join(timeout=120)
        log_text = server_log.read_text(encoding="utf-8", errors="replace")
        result.server_log_bytes = len(log_text.encode())
        result.server_error_lines = sum('"level":"ERROR"' in line for line in log_text.splitlines())
        result.key_occurrences = log_text.count(key)
        _tally(result, stack, ids, drainer)
    _judge(result, drainer)
    return result


def _drive(
    result: LoadResult, base_url: str, headers: dict[str, str], ids: list[str], max_s: float
) -> None:
    per_conversation = max(1, result.stops // len(ids))
    # Shuffled: the stops of one conversation race each other across clients.
    schedule = [cid for cid in ids for _ in range(per_conversation)][: result.stops]
    random.Random(5).shuffle(schedule)  # noqa: S311 - a fixed order, not a secret
    work = iter(schedule)
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    started = time.monotonic()
    deadline = started + max_s

    def client() -> None:
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
            while time.monotonic() < deadline:
                with lock:
                    cid = next(work, None)
                if cid is None:
                    return
                sent = time.perf_counter()
                try:
                    response = http.post(f"/api/conversations/{cid}/stop")
                    status, message = str(response.status_code), response.json().get("message")
                except (httpx.HTTPError, ValueError) as error:
                    status, message = type(error).__name__, None
                elapsed = time.perf_counter() - sent
                with lock:
                    latencies.append(elapsed)
                    statuses[status] += 1
                    messages[str(message)] += 1

    threads = [threading.Thread(target=client) for _ in range(result.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.duration_seconds = round(time.monotonic() - started, 2)
    result.requests = len(latencies)
    result.completed = result.requests == len(schedule)
    result.statuses = dict(statuses)
    result.errors = sum(n for status, n in statuses.items() if status != "200")
    result.transitions = messages[STOPPED_NOW]
    ordered = sorted(latencies)
    if ordered:
        result.p50_ms = round(statistics.median(ordered) * 1000, 2)
        result.p99_ms = round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2)
        result.max_ms = round(ordered[-1] * 1000, 2)
        result.throughput_rps = round(len(ordered) / max(result.duration_seconds, 1e-9), 1)


def _tally(result: LoadResult, stack: Stack, ids: list[str], drainer: _Drainer) -> None:
    records: dict[str, dict[str, Any]] = {}
    dynamodb = stack.client("dynamodb")
    for page in dynamodb.get_paginator("scan").paginate(TableName=stack.table_name):
        for item in page["Items"]:
            records[item["conversation_id"]["S"]] = item
    stop_ids = {
        cid: item.get("stop_id", {}).get("S")
        for cid, item in records.items()
        if item["status"]["S"] == "STOPPED" and item.get("version", {}).get("N") == "1"
    }
    result.stopped_records = sum(1 for cid in ids if cid in stop_ids)
    result.cancels_delivered = len(drainer.delivered)
    by_conversation: dict[str, set[str]] = defaultdict(set)
    for sid, stop_id in drainer.delivered:
        by_conversation[sid].add(stop_id)
    result.distinct_cancels = sum(len(found) for found in by_conversation.values())
    result.cancels_with_wrong_stop_id = sum(
        1 for sid, stop_id in drainer.delivered if stop_ids.get(sid) != stop_id
    )


def _judge(result: LoadResult, drainer: _Drainer) -> None:
    checks = {
        "not every request was made in time": not result.completed,
        "errors": result.errors != 0,
        "transitions != conversations": result.transitions != result.conversations,
        "records not STOPPED exactly once": result.stopped_records != result.conversations,
        "distinct cancels delivered != transitions": result.distinct_cancels != result.transitions,
        "a cancel carried another stop_id": result.cancels_with_wrong_stop_id != 0,
        "RSS grew": result.rss_after_mb - result.rss_before_mb > RSS_GROWTH_LIMIT_MB,
        "the session key appeared in the server's output": result.key_occurrences != 0,
        "the server logged errors": result.server_error_lines != 0,
        "the queue drainer failed": drainer.error is not None,
    }
    result.failures = [name for name, failed in checks.items() if failed]


def _moto(port: int) -> None:
    from local.emulation import moto_server

    with moto_server(port):
        threading.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", nargs="?", choices=["drive", "serve", "moto"], default="drive")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stops", type=int, default=10_000)
    parser.add_argument("--conversations", type=int, default=1_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if args.role == "serve":
        run_route(args.port, log_level="warning")
        return 0
    if args.role == "moto":
        _moto(args.port)
        return 0
    with tempfile.TemporaryDirectory(prefix="stop-load-") as workdir:
        result = run_load(
            stops=args.stops,
            conversations=args.conversations,
            clients=args.clients,
            max_seconds=args.max_seconds,
            workdir=Path(workdir),
        )
    figures = {**asdict(result), "ok": result.ok}
    text = json.dumps(figures, indent=2)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
