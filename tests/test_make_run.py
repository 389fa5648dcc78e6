"""``make run`` as a user runs it: the printed curl stops the live demo agent loop."""

from __future__ import annotations

import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import IO

import httpx

from local.emulation import ROOT, free_port

DEADLINE = 60.0


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def _wait_for(lines: queue.Queue[str], pattern: str, seen: list[str]) -> re.Match[str]:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"never printed {pattern!r}; got:\n{''.join(seen)[-3000:]}")


def test_the_printed_curl_stops_the_demo_loop() -> None:
    port, aws_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "local.run", "--port", str(port), "--aws-port", str(aws_port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        curl = shlex.split(_wait_for(lines, r"(curl -s .*)$", seen).group(1))
        _wait_for(lines, r"tick", seen)  # the demo loop is alive
        key = curl[curl.index("-H") + 1].split(": ", 1)[1]
        url = curl[-1]
        deadline = time.monotonic() + DEADLINE
        while True:  # uvicorn starts right after the banner
            try:
                response = httpx.post(url, headers={"X-Session-API-Key": key}, timeout=10)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the stop route never answered"
                time.sleep(0.2)

        assert response.status_code == 200
        assert response.json()["message"] == "Conversation stopped successfully"
        assert response.json()["conversation_status"] == "RUNNING"
        _wait_for(lines, r'"conversation_stopped"', seen)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode in (0, -signal.SIGINT, 130), "".join(seen)[-2000:]
