"""Where a remote model lives: the effective, normalised endpoint URL (part of its cache identity).

Two ``models.yaml`` entries with the same ``model:`` but different servers must
never share cached completions, so the identity of a remote model holds its
endpoint. The endpoint is normalised so that spellings of the same URL agree
(``HTTP://Host:80/v1/`` and ``http://host/v1``) and credentials written into a
URL (``http://user:secret@host``, ``?api_key=...``) never reach a cache key or a message.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from .redact import redact

OPENAI_DEFAULT = "https://api.openai.com/v1"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def effective_base_url(base_url: str | None) -> str:
    """The URL the ``openai`` SDK sends to: ``base_url``, else ``OPENAI_BASE_URL``, else the OpenAI API."""
    return base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_DEFAULT


def normalise_endpoint(url: str) -> str:
    """``url`` with scheme and host lower-cased, default port, user info and trailing slash dropped."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # a malformed port: keep the text as written, minus credentials
        port = None
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    # A key passed in the query (some proxies want one) is scrubbed like any other secret.
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), redact(parts.query), ""))
