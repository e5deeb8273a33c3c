"""Response cache in SQLite: replays text, tokens, the original latency and cost.

Safe with several xdist workers (WAL, busy timeout, one short transaction per
write). A corrupt or unreadable cache is never fatal: it is reported once and
the run goes on uncached. Only completions are stored: a call that failed is
never cached, so the next run asks again.

Beside each response, ``key_parts`` keeps what its key was made of (the
request's hash without the model, and the model identity) and the completion's
extras that must survive a replay (batch timing, the original size of a cut
output). Indexed by request, it answers "is this request cached for another
model identity?" with one query per lane, and ``llmeval cache explain`` reads
it. It is a separate table, so caches stay readable by older versions.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from .backends.base import Completion

DEFAULT_CACHE = ".llmeval/cache.sqlite"  # relative to the rootdir; ini key llmeval_cache_path
MODES = ("rw", "ro", "off", "refresh")
SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    cost REAL NOT NULL,
    finish_reason TEXT,
    created REAL NOT NULL
);
"""
PARTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS key_parts (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,   -- Request.request_hash(): messages and parameters, without the model
    identity TEXT NOT NULL,  -- the model identity the key was made with
    extra TEXT               -- JSON: the completion's extras that a replay keeps (REPLAYED_EXTRA)
);
CREATE INDEX IF NOT EXISTS key_parts_request ON key_parts(request);
"""
# Completion.extra entries stored with a response and given back with it.
REPLAYED_EXTRA = ("batch_size", "time_to_last_token_s", "s_per_token", "output_bytes", "output_limit")


CONNECT_ATTEMPTS = 20


class ResponseCache:
    """Get and put completions by request key, honouring a mode (rw, ro, off, refresh)."""

    def __init__(self, path: str | Path, mode: str = "rw") -> None:
        if mode not in MODES:
            raise ValueError(f"cache mode must be one of {', '.join(MODES)}")
        self.path = Path(path)
        self.mode = mode
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self.hits = 0
        self.misses = 0
        self._broken = False
        self._parts = False  # whether the key_parts table is there (set on connect)

    def _connect(self) -> sqlite3.Connection | None:
        if self._broken or self.mode == "off":
            return None
        if self._conn is None:
            # xdist workers open a new cache file at the same moment: switching it to WAL and
            # creating its tables can answer "database is locked" at once (SQLite does not
            # always wait its busy timeout for that), so a locked start is retried, not fatal.
            for attempt in range(CONNECT_ATTEMPTS):
                try:
                    self._conn = self._open()
                    break
                except sqlite3.OperationalError as e:
                    if ("locked" not in str(e) and "busy" not in str(e)) or attempt == CONNECT_ATTEMPTS - 1:
                        self._disable(e)
                        return None
                    time.sleep(0.05 * (attempt + 1))
                except sqlite3.Error as e:
                    self._disable(e)
                    return None
        return self._conn

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(SCHEMA)
            try:
                conn.executescript(PARTS_SCHEMA)
                self._parts = True
            except sqlite3.OperationalError as e:  # a read-only cache from an older version: no extras
                if "locked" in str(e) or "busy" in str(e):
                    raise
                self._parts = False
        except BaseException:
            conn.close()
            raise
        return conn

    def _disable(self, err: Exception) -> None:
        self._broken = True
        warnings.warn(f"response cache {self.path} is unusable ({err}); running without it", stacklevel=2)

    def get(self, key: str) -> Completion | None:
        """A cached completion for ``key`` (marked cached), or None."""
        return self.get_many([key]).get(key)

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        """Cached completions for those of ``keys`` that have one: one query per 500 keys.

        A run submits every collected item at once; one query per item was a
        measurable part of the harness overhead on 10,000 cached items.
        """
        if self.mode in ("off", "refresh") or not keys:
            return {}
        found: dict[str, Completion] = {}
        with self._lock:
            conn = self._connect()
            if conn is None:
                return {}
            extra = "p.extra" if self._parts else "NULL"
            join = "LEFT JOIN key_parts p ON p.key = r.key" if self._parts else ""
            try:
                for i in range(0, len(keys), 500):
                    chunk = keys[i : i + 500]
                    rows = conn.execute(
                        "SELECT r.key, model, text, prompt_tokens, completion_tokens, latency_s, cost, finish_reason, "
                        f"{extra} FROM responses r {join} WHERE r.key IN ({','.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
                    for row in rows:
                        found[row[0]] = _completion(row[1:])
            except sqlite3.Error as e:
                self._disable(e)
                return {}
        self.hits += len(found)
        self.misses += len(set(keys)) - len(found)
        return found

    def put(self, key: str, c: Completion, request: str | None = None, identity: str | None = None) -> None:
        """Store a fresh completion (not in ``ro`` or ``off`` mode), with its key's parts when given."""
        if self.mode in ("ro", "off") or c.cached:
            return
        extra = {k: c.extra[k] for k in REPLAYED_EXTRA if k in c.extra}
        with self._lock:
            conn = self._connect()
            if conn is None:
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(
                        "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            key,
                            c.model,
                            c.text,
                            c.prompt_tokens,
                            c.completion_tokens,
                            c.latency_s,
                            c.cost,
                            c.finish_reason,
                            time.time(),
                        ),
                    )
                    if request is not None and identity is not None and self._parts:
                        conn.execute(
                            "INSERT OR REPLACE INTO key_parts VALUES (?, ?, ?, ?)",
                            (key, request, identity, json.dumps(extra) if extra else None),
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                self._disable(e)

    def identities(self, requests: list[str], exclude: str) -> dict[str, list[str]]:
        """For each request hash, the other model identities it is cached under (one query per 500)."""
        found: dict[str, list[str]] = {}
        if self.mode == "off" or not requests:
            return found
        with self._lock:
            conn = self._connect()
            if conn is None or not self._parts:
                return found
            try:
                for i in range(0, len(requests), 500):
                    chunk = requests[i : i + 500]
                    for req, ident in conn.execute(
                        f"SELECT request, identity FROM key_parts WHERE request IN ({','.join('?' * len(chunk))}) "
                        "AND identity != ?",
                        [*chunk, exclude],
                    ):
                        found.setdefault(req, []).append(ident)
            except sqlite3.Error as e:
                self._disable(e)
                return {}
        return found

    def entry(self, key: str) -> dict[str, Any] | None:
        """What the cache holds under ``key`` (for ``llmeval cache explain``), or None."""
        with self._lock:
            conn = self._connect()
            if conn is None:
                return None
            parts = "p.request, p.identity, p.extra" if self._parts else "NULL, NULL, NULL"
            join = "LEFT JOIN key_parts p ON p.key = r.key" if self._parts else ""
            row = conn.execute(
                f"SELECT r.model, r.created, length(CAST(r.text AS BLOB)), {parts} FROM responses r {join} "
                "WHERE r.key = ?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        model, created, size, request, identity, extra = row
        return {
            "model": model,
            "created": created,
            "text_bytes": size,
            "request": request,
            "identity": identity,
            "extra": json.loads(extra) if extra else {},
        }

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _completion(row: tuple) -> Completion:
    model, text, pt, ct, lat, cost, fr, extra = row
    return Completion(
        text=text,
        latency_s=lat,
        prompt_tokens=pt,
        completion_tokens=ct,
        cost=cost,
        cached=True,
        finish_reason=fr,
        model=model,
        extra=json.loads(extra) if extra else {},
    )


def identity_parts(identity: str) -> dict[str, Any]:
    """A model identity as its parts (identities are JSON objects; a plugin's may be any text)."""
    try:
        parts = json.loads(identity)
    except ValueError:
        return {"identity": identity}
    return parts if isinstance(parts, dict) else {"identity": identity}


def describe_identity_change(cached: str, current: str) -> str:
    """Why a request cached under ``cached`` is not a hit for ``current``: the parts that differ."""
    a, b = identity_parts(cached), identity_parts(current)
    diffs = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            was = a.get(k, "(not in the cached key)")
            diffs.append(f"{k} {was} in the cache, {b.get(k, '(none)')} now")
    return "same request cached for another model identity: " + "; ".join(diffs)
