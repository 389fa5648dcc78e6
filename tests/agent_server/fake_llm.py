"""An OpenAI-compatible chat-completions endpoint, standard library only, that drives an
OpenHands agent-server's real agent loop with no real LLM.

The first user message is the script, words of ``key=value``:

- ``think=N``: the first N answers are ``think`` tool calls (default 0);
- ``delay=S``: each answer waits S seconds first (a slow LLM: a step in flight);
- ``sleep=S``: after the thinks, one ``terminal`` call ``touch <dir>/<id>.started;
  sleep S; touch <dir>/<id>.after`` (``<id>`` the ``tag=`` word): the files tell whether
  the command ran and whether it ran to its end;
- then ``finish``.

Every request is counted per ``tag`` (``requests``), so a test can tell whether the agent
asked the LLM again after a stop.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODEL = "fake-agent"

_WORD = re.compile(r"\b(tag|think|delay|sleep)=([A-Za-z0-9]+(?:\.[0-9]+)?)")


def _script(messages: list[dict[str, Any]]) -> dict[str, str]:
    for message in messages:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}]
            content = " ".join(str(part.get("text", "")) for part in content)
        # The agent-server may add text of its own to the message: only our words count.
        found = dict(_WORD.findall(str(content or "")))
        if "tag" in found:
            return found
    return {}


def _assistant_turns(messages: list[dict[str, Any]]) -> int:
    return sum(1 for message in messages if message.get("role") == "assistant")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An interrupted agent hangs up on its LLM call: not an error here."""


class FakeLlm:
    """The server and what it saw; ``base_url`` is what an ``LLM(base_url=...)`` takes."""

    def __init__(self, files: Path) -> None:
        self.files = files
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        handler = self._handler()
        self._server = _QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeLlm:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def count(self, tag: str) -> int:
        with self._lock:
            return self.requests[tag]

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages", [])
        script = _script(messages)
        tag = script.get("tag", "untagged")
        with self._lock:
            self.requests[tag] += 1
        time.sleep(float(script.get("delay", "0")))
        turn = _assistant_turns(messages)
        thinks = int(script.get("think", "0"))
        if turn < thinks:
            call = ("think", {"thought": f"step {turn + 1} of {thinks}"})
        elif turn == thinks and "sleep" in script:
            marker = self.files / tag
            command = f"touch {marker}.started && sleep {script['sleep']} && touch {marker}.after"
            call = ("terminal", {"command": command})
        else:
            call = ("finish", {"message": "done"})
        name, arguments = call
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", MODEL),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [
                            {
                                "id": f"call_{uuid.uuid4().hex[:12]}",
                                "type": "function",
                                "function": {"name": name, "arguments": json.dumps(arguments)},
                            }
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        llm = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    self.send_error(404)
                    return
                if body.get("stream"):
                    self.send_error(400, "streaming is not faked")
                    return
                data = json.dumps(llm.answer(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # /v1/models, should anything ask
                data = json.dumps({"object": "list", "data": [{"id": MODEL}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
