"""Before generation: can each model of the run run here, and does each remote one answer?

A server that refuses connections used to cost a run minutes of retries and one
identical error per item; a missing key, a usage error with ``--model`` but an
error per item with the ``llmeval_model`` ini key. Now, before the first request,
the controller checks every model its eval items use (whichever way it was
selected): the spec's own availability (key set, GPU, packages, adapter), and for
a remote model one ``GET {endpoint}/models`` with a short timeout. Refused
connections, failed DNS look-ups, 401/403 answers, missing keys and a vLLM server
that does not serve the model end the session at once, with one message that
names each model, its URL and the cause. Anything transient (a timeout, 429, 5xx)
is left to the normal retry path.
"""

from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .endpoint import effective_base_url, normalise_endpoint
from .redact import redact

TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Problem:
    """Why a model cannot be used; ``fatal`` ends the session, else it is a note."""

    model: str
    url: str | None
    cause: str
    fatal: bool = True

    def line(self) -> str:
        where = f" at {self.url}" if self.url else ""
        return f"model {self.model!r}{where}: {self.cause}"


def remote_urls(spec: Any) -> list[str]:
    """The endpoints of a model served elsewhere (``openai``, ``vllm_server`` with ``base_url``, or
    their ``replicas`` where a type has them); empty for a model this session runs or starts."""
    urls = list(getattr(spec, "replicas", None) or [])
    if not urls and (spec.type == "openai" or getattr(spec, "base_url", None)):
        urls = [effective_base_url(getattr(spec, "base_url", None))]
    if spec.type not in ("openai", "vllm_server"):
        return []
    out = [normalise_endpoint(u) for u in urls]
    return [u if spec.type == "openai" or u.endswith("/v1") else u + "/v1" for u in out]


def check(spec: Any, timeout: float = TIMEOUT_S) -> Problem | None:
    """The one problem of ``spec`` worth reporting, or None when it looks usable.

    With replicas, the model is unusable only when none of them answers; a dead one is a note.
    """
    urls = remote_urls(spec)
    ok, why = spec.availability()
    if not ok:
        return Problem(spec.name, urls[0] if len(urls) == 1 else None, f"cannot run here: {why}")
    problems = [p for p in (reach(spec, u, timeout) for u in urls) if p is not None]
    if len(urls) <= 1 or not problems:
        return problems[0] if problems else None
    causes = "; ".join(f"{p.url}: {p.cause}" for p in problems)
    if len(problems) == len(urls) and all(p.fatal for p in problems):
        return Problem(spec.name, None, f"none of its {len(urls)} replicas answers ({causes})")
    return Problem(
        spec.name, None, f"{len(problems)} of {len(urls)} replicas do not answer ({causes})", fatal=False
    )


def reach(spec: Any, url: str, timeout: float) -> Problem | None:
    """One ``GET {url}/models``; a problem for refused, DNS, 401/403 or a model the server lacks."""
    import httpx

    headers = {}
    env = getattr(spec, "api_key_env", None)
    if env and os.environ.get(env):
        headers["Authorization"] = f"Bearer {os.environ[env]}"
    try:
        # trust_env as the openai SDK does: the same proxies as the requests that follow.
        r = httpx.get(url + "/models", headers=headers, timeout=timeout)
    except httpx.ConnectError as e:
        return Problem(spec.name, url, _connect_cause(e))
    except httpx.TimeoutException:
        return Problem(
            spec.name, url, f"no answer within {timeout:g} s; going on (requests retry)", fatal=False
        )
    except httpx.HTTPError as e:  # a broken answer: the requests will say more, and retry
        return Problem(spec.name, url, f"{type(e).__name__}: {redact(str(e))[:200]}", fatal=False)
    if r.status_code in (401, 403):
        hint = f" (is {env} the right key?)" if env else " (set api_key_env in the models file)"
        return Problem(spec.name, url, f"HTTP {r.status_code} {_message(r)}{hint}")
    if r.status_code == 200 and spec.type == "vllm_server":
        served = _served(r)
        want = str(spec.adapter or spec.model)
        if served is not None and want not in served:
            return Problem(
                spec.name,
                url,
                f"the server does not serve {want!r}; it serves {', '.join(served) or 'nothing'}",
            )
    return None  # 200, 404 (no models list), 429 or 5xx: the requests go ahead and retry what is transient


def _connect_cause(e: Exception) -> str:
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return f"DNS lookup failed ({seen.strerror or seen})"
        seen = seen.__cause__ or seen.__context__
    text = str(e)
    if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
        return f"DNS lookup failed ({text})"
    if "refused" in text.lower():
        return "connection refused (is the server running?)"
    return f"cannot connect ({redact(text)[:200]})"


def _message(r: Any) -> str:
    try:
        err = r.json().get("error")
        text = err.get("message") if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        text = r.text
    return redact(" ".join(str(text or "").split()))[:200]


def _served(r: Any) -> list[str] | None:
    try:
        return [str(m.get("id")) for m in r.json().get("data", [])]
    except (ValueError, AttributeError, TypeError):
        return None


def run(specs: list[Any], timeout: float = TIMEOUT_S) -> list[Problem]:
    """Check ``specs`` at once (in threads); the problems found, in the given order."""
    if not specs:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(specs)), thread_name_prefix="llmeval-preflight") as pool:
        found = list(pool.map(lambda s: check(s, timeout), specs))
    return [p for p in found if p is not None]


def message(problems: list[Problem]) -> str:
    """The one message that ends the session."""
    lines = [p.line() for p in problems if p.fatal]
    head = (
        "llmeval: preflight failed before any request was sent:"
        if len(lines) > 1
        else "llmeval: preflight failed:"
    )
    body = "\n  ".join(lines) if len(lines) > 1 else lines[0]
    sep = "\n  " if len(lines) > 1 else " "
    return f"{head}{sep}{body}\n(fix the server, the key or the models file; `pytest --list-models` shows what can run)"
