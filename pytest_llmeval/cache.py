"""Response cache in SQLite: replays text, tokens, the original latency and cost.

Safe with several xdist workers (WAL, busy timeout, one short transaction per
write). A corrupt or unreadable cache is never fatal: it is reported once and
the run goes on uncached.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import warnings
from pathlib import Path

from .backends.base import Completion

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

    def _connect(self) -> sqlite3.Connection | None:
        if self._broken or self.mode == "off":
            return None
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(SCHEMA)
                self._conn = conn
            except sqlite3.Error as e:
                self._disable(e)
                return None
        return self._conn

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
            try:
                for i in range(0, len(keys), 500):
                    chunk = keys[i : i + 500]
                    rows = conn.execute(
                        "SELECT key, model, text, prompt_tokens, completion_tokens, latency_s, cost, finish_reason "
                        f"FROM responses WHERE key IN ({','.join('?' * len(chunk))})",
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

    def put(self, key: str, c: Completion) -> None:
        """Store a fresh completion (not in ``ro`` or ``off`` mode)."""
        if self.mode in ("ro", "off") or c.cached:
            return
        with self._lock:
            conn = self._connect()
            if conn is None:
                return
            try:
                conn.execute(
                    "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, c.model, c.text, c.prompt_tokens, c.completion_tokens, c.latency_s, c.cost,
                     c.finish_reason, time.time()),
                )
            except sqlite3.Error as e:
                self._disable(e)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _completion(row: tuple) -> Completion:
    model, text, pt, ct, lat, cost, fr = row
    return Completion(
        text=text,
        latency_s=lat,
        prompt_tokens=pt,
        completion_tokens=ct,
        cost=cost,
        cached=True,
        finish_reason=fr,
        model=model,
    )
