"""A small, real OpenAI-compatible HTTP server on 127.0.0.1 with scripted answers and injectable faults.

It is what tests and benchmarks talk to when they need an endpoint that answers instantly, fails on purpose
(429, 500, slow replies, malformed bodies) or records exactly what it received. It is not a model: `reply` is a
function from the request's messages to the reply text.
"""

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from seekhelp.backends.openai_compat import PREFLIGHT_MESSAGES


def default_reply(messages: list[dict]) -> str:
    last = messages[-1]["content"] if messages else ""
    return f"Looking it up.\n<information>Notes about: {last[:200]}</information>"


@dataclass
class Faults:
    """Probabilities of each fault per request (the rest are answered normally)."""

    rate_limit: float = 0.0  # 429
    server_error: float = 0.0  # 500
    slow: float = 0.0  # sleep `slow_s` before answering (a client timeout shorter than that sees a timeout)
    malformed: float = 0.0  # 200 with a body that is not a chat completion
    slow_s: float = 3.0
    script: list[str] = field(default_factory=list)  # forced sequence: "429", "500", "slow", "bad", "ok"
    retry_headers: dict[str, str] = field(default_factory=dict)  # sent with 429/500, e.g. {"Retry-After": "2"}
    seed: int = 0


class _Listener(ThreadingHTTPServer):
    request_queue_size = 128  # a burst of concurrent episodes opens many connections at once (default backlog: 5)
    daemon_threads = True


class ScriptedServer:
    def __init__(self, reply: Callable[[list[dict]], str] = default_reply, faults: Faults | None = None,
                 port: int = 0, models: list[str] | None = None):
        """`models`: the ids /v1/models lists; when given, a chat request for another id gets 404, as OpenAI and
        vLLM answer (None: any id is answered and "scripted" is listed)."""
        self.reply, self.faults, self.models = reply, faults or Faults(), models
        self.requests: list[dict] = []  # every request body received, in order (faulty ones too)
        self.pings: list[dict] = []  # the preflight's 1-token calls: answered (and faulted) alike, kept apart
        self.request_times: list[float] = []  # time.monotonic() of each chat request, in the same order
        self.counts: dict[str, int] = {"ok": 0, "429": 0, "500": 0, "slow": 0, "bad": 0}
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._httpd = _Listener(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def _pick(self) -> str:
        with self._lock:
            if self.faults.script:
                return self.faults.script.pop(0)
            r, f = self._rng.random(), self.faults
            for kind, p in (("429", f.rate_limit), ("500", f.server_error), ("slow", f.slow), ("bad", f.malformed)):
                if r < p:
                    return kind
                r -= p
            return "ok"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): not our error
                    self.close_connection = True

            def do_GET(self):
                if self.path.rstrip("/") in ("/health", "/v1/models"):
                    ids = server.models or ["scripted"]
                    self._send(200, json.dumps({"status": "ok", "object": "list", "data": [
                        {"id": i, "object": "model", "created": 0, "owned_by": "seekhelp"} for i in ids]}).encode())
                else:
                    self._send(404, b"{}")

            def do_POST(self):
                if not self.path.rstrip("/").endswith("/v1/chat/completions"):
                    self.rfile.read(int(self.headers.get("Content-Length", 0)))
                    return self._send(404, b'{"error":{"message":"not found"}}')
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if server.models is not None and body.get("model") not in server.models:
                    return self._send(404, json.dumps({"error": {
                        "message": f"The model `{body.get('model')}` does not exist.", "type": "invalid_request_error",
                        "code": "model_not_found"}}).encode())
                kind = server._pick()
                with server._lock:
                    if body.get("messages") == PREFLIGHT_MESSAGES and body.get("max_tokens") == 1:
                        server.pings.append(body)  # counted apart: tests count the calls of the work itself
                    else:
                        server.requests.append(body)
                        server.request_times.append(time.monotonic())
                        server.counts[kind] = server.counts.get(kind, 0) + 1
                if kind == "429":
                    return self._send(429, b'{"error":{"message":"rate limited","type":"rate_limit"}}',
                                      server.faults.retry_headers)
                if kind == "500":
                    return self._send(500, b'{"error":{"message":"boom","type":"server_error"}}',
                                      server.faults.retry_headers)
                if kind == "bad":
                    return self._send(200, b'{"unexpected": true')
                if kind == "slow":
                    time.sleep(server.faults.slow_s)
                text = server.reply(body.get("messages", []))
                prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
                out = {"id": "x", "object": "chat.completion", "created": int(time.time()),
                       "model": body.get("model", "scripted"),
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": text}}],
                       "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                                 "total_tokens": prompt_tokens + len(text.split())}}
                self._send(200, json.dumps(out).encode())

        return Handler

    def __enter__(self) -> "ScriptedServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def user_texts(self) -> list[str]:
        """Every user- and system-side text the server received (to check nothing private arrived)."""
        return [str(m.get("content", "")) for b in self.requests for m in b.get("messages", [])]
