"""Reading stored runs from the metrics database: the latest ones, one by reference, one in full."""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

from .metrics_db import flatten_aggregate, row_to_case_result


def recent_runs(conn: sqlite3.Connection, limit: int = 20) -> list[dict[str, Any]]:
    """The latest runs first, with result counts: id, started, models, n, passed, verdict, complete."""
    rows = conn.execute(
        """SELECT r.*,
                  (SELECT COUNT(*) FROM results x WHERE x.run_id = r.id AND x.outcome != 'skipped') AS n,
                  (SELECT COUNT(*) FROM results x WHERE x.run_id = r.id AND x.outcome = 'passed') AS n_passed
           FROM runs r ORDER BY r.started DESC, r.rowid DESC LIMIT ?""",
        (limit,),
    ).fetchall()
    return [dict(r) for r in rows]


def resolve_run(conn: sqlite3.Connection, ref: str | None) -> str:
    """A run id from ``latest``, ``latest~N`` (N runs before), a full id or a unique prefix."""
    ref = (ref or "latest").strip()
    m = re.fullmatch(r"latest(?:~(\d+))?", ref)
    if m:
        back = int(m.group(1) or 0)
        row = conn.execute(
            "SELECT id FROM runs ORDER BY started DESC, rowid DESC LIMIT 1 OFFSET ?", (back,)
        ).fetchone()
        if row is None:
            raise KeyError("the metrics database has no runs yet" if back == 0 else f"there is no run {ref}")
        return str(row["id"])
    rows = conn.execute(
        "SELECT id FROM runs WHERE id = ? OR id LIKE ? ESCAPE '\\' ORDER BY started DESC LIMIT 3",
        (ref, ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"),
    ).fetchall()
    ids = [str(r["id"]) for r in rows]
    if ref in ids:
        return ref
    if len(ids) == 1:
        return ids[0]
    if len(ids) > 1:
        raise KeyError(f"run id {ref!r} is ambiguous: it starts {', '.join(ids)}...")
    recent = [r["id"] for r in recent_runs(conn, 5)]
    raise KeyError(
        f"no run {ref!r} in the metrics database; recent runs: {', '.join(recent) if recent else 'none'}"
    )


def load_run(conn: sqlite3.Connection, run_id: str) -> dict[str, Any]:
    """A run's row (JSON columns decoded), its results and its aggregates.

    A run that did not finish has no stored aggregates; they are computed from
    its results (``aggregates_computed`` says so).
    """
    from .results import aggregate

    row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise KeyError(f"no run {run_id!r}")
    run = dict(row)
    for key in ("models", "model_specs", "datasets", "verdict", "stats", "merged_from", "judges"):
        if run.get(key):
            run[key] = json.loads(run[key])
    result_rows = conn.execute(
        "SELECT * FROM results WHERE run_id = ? ORDER BY test, model, rowid", (run_id,)
    ).fetchall()
    results = []
    for r in result_rows:
        d = dict(r)
        for key in ("tags", "scores", "expected"):
            d[key] = json.loads(d[key]) if d[key] else None
        results.append(d)
    aggs: dict[tuple[str, str], dict[str, float | None]] = {}
    for r in conn.execute(
        "SELECT test, model, metric, value FROM aggregates WHERE run_id = ? ORDER BY rowid", (run_id,)
    ):
        aggs.setdefault((r["test"], r["model"]), {})[r["metric"]] = r["value"]
    computed = False
    if not aggs and result_rows:
        computed = True
        for a in aggregate([row_to_case_result(r) for r in result_rows]):
            aggs[(a.test, a.model)] = flatten_aggregate(a)
    return {
        "run": run,
        "results": results,
        "aggregates": [{"test": t, "model": m, "metrics": v} for (t, m), v in aggs.items()],
        "aggregates_computed": computed,
    }
