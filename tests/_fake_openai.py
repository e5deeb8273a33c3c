"""A tiny OpenAI-compatible chat-completions server on loopback, for tests of code around a model.

It speaks the real wire format, so the plugin's ``openai`` backend, scheduler and
records run unchanged. ``respond(prompt, headers)`` decides the answer and
``delay(prompt)`` how long to wait before giving it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def last_word(prompt: str, headers: Any) -> str:
    """Default answer: the prompt's last word (cases are written as "say X")."""
    return prompt.split()[-1] if prompt.split() else ""


class FakeOpenAIServer:
    """``with FakeOpenAIServer() as srv: srv.url`` -> ``http://127.0.0.1:PORT/v1``."""

    def __init__(
        self,
        respond: Callable[[str, Any], str] = last_word,
        delay: Callable[[str], float] | None = None,
    ) -> None:
        self.respond = respond
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self._stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    self.send_error(404)
                    return
                outer.requests.append(body)
                prompt = body["messages"][-1]["content"]
                wait = outer.delay(prompt) if outer.delay else 0.0
                if wait:
                    outer._stop.wait(wait)
                text = outer.respond(prompt, self.headers)
                pt, ct = len(prompt.split()) + 3, len(text.split()) or 1
                data = json.dumps(
                    {
                        "id": f"chatcmpl-{len(outer.requests)}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "fake"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
                    }
                ).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client went away (a killed run)
                    pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()


def models_yaml(url: str, name: str = "fake", **extra: str) -> str:
    """A models.yaml with one openai-type model served by the fake."""
    lines = [f"    {k}: {v}" for k, v in extra.items()]
    return "\n".join(["models:", f"  {name}:", "    type: openai", "    model: fake", f"    base_url: {url}", *lines]) + "\n"
