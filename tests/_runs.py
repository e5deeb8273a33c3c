"""Real runs of a suite written by ``_fake_openai.write_suite``, recorded in its metrics database."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from _fake_openai import RUN_ARGS, FakeOpenAIServer


def record_runs(
    root: Path, srv: FakeOpenAIServer, responders: Iterable[Callable[..., Any]]
) -> dict[str, Any]:
    """One pytest run per responder in ``root``; the last two run ids as ``base`` and ``cur``."""
    ids = []
    for responder in responders:
        srv.responder = responder
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", *RUN_ARGS], cwd=root, capture_output=True, text=True
        )
        assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
        conn = sqlite3.connect(root / "data" / "metrics.db")
        ids.append(conn.execute("SELECT id FROM runs ORDER BY rowid DESC LIMIT 1").fetchone()[0])
        conn.close()
    assert len(set(ids)) == len(ids)
    return {"root": root, "db": str(root / "data" / "metrics.db"), "base": ids[-2], "cur": ids[-1]}
