"""Keep secrets out of everything we write: messages, reports, the database, traces."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable

_PATTERNS = [
    re.compile(r"\bsk-[A-Za-z0-9_\-*]{8,}"),
    re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._\-~+/=*]{8,}"),
    # The header's value: one token, or a scheme word and its token ("Bearer abc", "Basic abc"), never
    # the word after it (a second pass over "Authorization: [REDACTED] after ..." must leave "after")
    # nor what closes it ("(sent Authorization: Bearer abc)" keeps its ")").
    re.compile(
        r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)"
        r"(?:(?:bearer|basic|token|digest|apikey|api-key)\s+)?[\w.~+/=*\-\[\]]+"
    ),
    re.compile(r"(?i)(api[_-]?key['\"]?\s*[:=]\s*['\"]?)[\w.~+/=*\-\[\]]{6,}"),
]
_ENV_HINTS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
_extra: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value (e.g. an API key read from the environment) to scrub."""
    if value and len(value) >= 6:
        _extra.add(value)


def register_key_envs(names: Iterable[str | None]) -> None:
    """Scrub the values of these environment variables (a models file's ``api_key_env``), whatever their names."""
    for name in names:
        if name:
            register_secret(os.environ.get(name))


_cache: dict[str, object] = {"at": -1e9, "n": -1, "values": ()}


def _env_secrets() -> tuple[str, ...]:
    # Scanning the environment on every call dominated the per-item cost, so the
    # result is kept briefly; a changed variable count refreshes it at once.
    now = time.monotonic()
    if now - _cache["at"] > 2.0 or _cache["n"] != len(os.environ) + len(_extra):  # type: ignore[operator]
        vals = set(_extra)
        for k, v in os.environ.items():
            if v and len(v) >= 8 and any(h in k.upper() for h in _ENV_HINTS):
                vals.add(v)
        _cache.update(
            at=now, n=len(os.environ) + len(_extra), values=tuple(sorted(vals, key=len, reverse=True))
        )
    return _cache["values"]  # type: ignore[return-value]


def redact(text: str) -> str:
    """Replace API keys, bearer tokens and secret environment values with ``[REDACTED]``."""
    if not text:
        return text
    for secret in _env_secrets():
        if secret in text:
            text = text.replace(secret, "[REDACTED]")
    text = _PATTERNS[0].sub("[REDACTED]", text)
    text = _PATTERNS[1].sub(lambda m: f"{m.group(1)} [REDACTED]", text)
    text = _PATTERNS[2].sub(lambda m: f"{m.group(1)}[REDACTED]", text)  # the scheme word goes too
    text = _PATTERNS[3].sub(lambda m: f"{m.group(1)}[REDACTED]", text)
    return text


_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe_terminal(text: str, limit: int = 200) -> str:
    """Text fit for one terminal line: escape sequences and control characters made visible."""
    text = _ANSI.sub(lambda m: repr(m.group(0))[1:-1], str(text))
    text = _CTRL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text.replace("\n", "\\n").replace("\t", " "))
    return text if len(text) <= limit else text[: limit - 3] + "..."
