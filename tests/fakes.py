"""A loopback server that speaks the OpenAI chat-completions wire format, with fault injection.

Only for what no real part produces on demand: 429 storms, 5xx, resets,
truncated bodies, invalid UTF-8, slow answers. Everything else is tested
against the embedded model and a real vLLM server.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[list[dict[str, Any]], dict[str, Any]], str]

FAULTS = ("429", "500", "503", "slow", "reset", "truncated")
# Not in the default random mix: an HTTP 200 without the answer, and refusals of the key.
MALFORMED = ("empty_choices", "no_message")
AUTH_FAULTS = ("401", "403")


def echo_last_user(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
    """Default responder: the last user message, verbatim."""
    for m in reversed(messages):
        if m.get("role") == "user":
            return str(m.get("content", ""))
    return ""


class FakeOpenAIServer:
    """``with FakeOpenAIServer(responder) as srv: srv.base_url`` -> http://127.0.0.1:PORT/v1."""

    def __init__(
        self,
        responder: Responder = echo_last_user,
        *,
        delay: float = 0.0,
        fault_rate: float = 0.0,
        faults: tuple[str, ...] = FAULTS,
        retry_after: float = 0.05,
        slow_seconds: float = 3.0,
        seed: int = 0,
        model: str = "fake",
        fail_first: int = 0,
        capacity: int = 0,
        api_key: str | None = None,
        echo_auth: bool = False,
    ) -> None:
        self.responder = responder
        self.delay = delay
        self.fault_rate = fault_rate
        self.faults = faults
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.model = model
        self.fail_first = fail_first
        # With api_key, a request with another key gets OpenAI's 401, which quotes the key it got.
        self.api_key = api_key
        # With echo_auth, every answer repeats the Authorization header it came with (a leaky model).
        self.echo_auth = echo_auth
        self.times: list[float] = []
        self._rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.gets = 0  # GET requests (the models list)
        self.injected: dict[str, int] = {}
        self.completed = 0
        self.in_flight = 0
        self.max_in_flight = 0
        # At most ``capacity`` requests are served at once (0: any number); the rest wait, as on a
        # server whose batch is full. Only the service time (``delay``) is spent in a slot.
        self.capacity = capacity
        self._slots = threading.BoundedSemaphore(capacity) if capacity else None
        self.killed = False  # kill(): the process is gone
        self._conns: set[socket.socket] = set()
        self._port = 0
        self.httpd: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self) -> FakeOpenAIServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with server.lock:
                    server._conns.add(self.connection)

            def finish(self) -> None:
                with server.lock:
                    server._conns.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def do_GET(self) -> None:
                with server.lock:
                    server.gets += 1
                if server._refuse_key(self):
                    return
                if self.path.rstrip("/").endswith("/models"):
                    body = {
                        "object": "list",
                        "data": [{"id": server.model, "object": "model", "owned_by": "fake"}],
                    }
                    self._json(200, body)
                else:
                    self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                with server.lock:
                    server.headers.append(dict(self.headers))
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
                    return
                if server.killed:
                    _reset(self)
                    return
                if server._refuse_key(self):
                    return
                body = json.loads(raw)
                with server.lock:
                    server.requests.append(body)
                    server.times.append(time.monotonic())
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    fault = None
                    if len(server.requests) <= server.fail_first:
                        fault = server.faults[0]
                        server.injected[fault] = server.injected.get(fault, 0) + 1
                    elif server.fault_rate and server._rng.random() < server.fault_rate:
                        fault = server._rng.choice(server.faults)
                        server.injected[fault] = server.injected.get(fault, 0) + 1
                try:
                    server._serve(self, body, fault)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self._port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def kill(self) -> None:
        """As if the server process died: the port refuses connections, open connections are reset
        (requests in flight get no answer)."""
        self.killed = True
        self.stop()
        with self.lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- responses -----------------------------------------------------------
    def _refuse_key(self, h: Any) -> bool:
        """OpenAI's answer to a wrong key (it quotes the key it got); True when it was sent."""
        if self.api_key is None:
            return False
        got = str(h.headers.get("authorization", "")).removeprefix("Bearer ")
        if got == self.api_key:
            return False
        message = f"Incorrect API key provided: {got}. You can find your API key at platform.openai.com."
        error = {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}
        h._json(401, {"error": error})
        return True

    def _serve(self, h: Any, body: dict[str, Any], fault: str | None) -> None:
        if fault == "429":
            h._json(
                429,
                {
                    "error": {
                        "message": "Rate limit reached",
                        "type": "rate_limit_error",
                        "param": None,
                        "code": "rate_limit_exceeded",
                    }
                },
                {"retry-after": f"{self.retry_after:g}"},
            )
            return
        if fault in ("500", "503"):
            h._json(
                int(fault),
                {
                    "error": {
                        "message": "The server had an error",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
            )
            return
        if fault in AUTH_FAULTS:
            h._json(
                int(fault),
                {
                    "error": {
                        "message": "You are not allowed to use this model",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "forbidden",
                    }
                },
            )
            return
        if fault == "reset":
            _reset(h)
            return
        if fault == "slow":
            time.sleep(self.slow_seconds)
        elif self.delay:
            if self._slots is not None:
                with self._slots:
                    time.sleep(self.delay)
            else:
                time.sleep(self.delay)
        if self.killed:  # died while this request was being served
            _reset(h)
            return
        messages = body.get("messages", [])
        text = self.responder(messages, body)
        if self.echo_auth:
            text = f"{text} (you sent Authorization: {h.headers.get('authorization')})"
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages) + 3
        completion_tokens = max(1, len(text.split()))
        payload = {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        if fault == "empty_choices":
            payload["choices"] = []
        elif fault == "no_message":
            del payload["choices"][0]["message"]
        data = json.dumps(payload).encode()
        if fault == "truncated":
            h.send_response(200)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.connection.shutdown(socket.SHUT_WR)
            h.close_connection = True
            return
        if isinstance(text, str) and text.startswith("\x00raw:"):
            # Invalid UTF-8 inside the JSON body, as a broken server might send.
            data = data.replace(b"\\u0000raw:", b"\xff\xfe")
        with self.lock:
            self.completed += 1
        h.send_response(200)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def _reset(h: Any) -> None:
    """Drop the handler's connection with RST instead of FIN (SO_LINGER with a zero timeout)."""
    try:
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        h.connection.close()
    except OSError:
        pass
    h.close_connection = True


def models_yaml(base_url: str, names: tuple[str, ...] = ("fake",), **extra: Any) -> str:
    """A models.yaml text with openai-type models pointing at ``base_url``."""
    lines = ["models:"]
    for name in names:
        lines.append(f"  {name}:")
        lines.append("    type: openai")
        lines.append("    model: fake")
        lines.append(f"    base_url: {base_url}")
        for k, v in extra.items():
            lines.append(f"    {k}: {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def big_reply(n_bytes: int) -> Responder:
    """A responder whose every answer is ``n_bytes`` of text (a model gone on and on)."""
    block = ("lorem ipsum dolor sit amet " * 40)[:1000]
    text = (block * (n_bytes // len(block) + 1))[:n_bytes]
    return lambda messages, body: text
