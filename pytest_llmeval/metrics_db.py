"""The SQLite metrics database: schema and migrations, connections, and records <-> rows.

Tables ``runs`` (one row per run), ``results`` (one row per case result) and
``aggregates`` (one row per test, model and metric). Writing a run is
:mod:`pytest_llmeval.store`'s job; reading stored runs is :mod:`pytest_llmeval.runs`'s.
Secrets never reach the database: strings pass through :func:`scrub`.
"""

from __future__ import annotations

import json
import shlex
import sqlite3
import time
from pathlib import Path
from typing import Any

from .bounds import DEFAULT_LIMIT, cut
from .redact import redact
from .results import Aggregate, CaseResult

DEFAULT_DB = "data/metrics.db"
OUTPUT_LIMIT = DEFAULT_LIMIT  # bytes of output kept per result row, unless the run's bound says otherwise
BUSY_TIMEOUT_S = 5.0

# Schema migrations, applied in order; PRAGMA user_version counts those applied.
# Never edit a released step: append a new one (ALTER TABLE ..., CREATE INDEX ...).
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            started TEXT NOT NULL,           -- ISO 8601, UTC
            ended TEXT,
            duration_s REAL,
            git_commit TEXT,
            command TEXT,                    -- redacted
            rootdir TEXT,
            models TEXT NOT NULL DEFAULT '[]',       -- JSON list of model names
            model_specs TEXT NOT NULL DEFAULT '{}',  -- JSON: name -> type, model/path, adapter, spec hash
            datasets TEXT NOT NULL DEFAULT '{}',     -- JSON: test -> dataset sha256
            plugin_version TEXT,
            verdict TEXT,                    -- JSON of gate.Verdict.to_dict(); NULL when not gated
            gate_passed INTEGER,             -- 1, 0, or NULL when not gated
            complete INTEGER NOT NULL DEFAULT 0,
            exit_status INTEGER,
            run_dir TEXT,
            report_path TEXT,
            stats TEXT                       -- JSON: scheduler counters
        )""",
        """CREATE TABLE results (
            run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            nodeid TEXT NOT NULL,
            test TEXT NOT NULL,
            model TEXT NOT NULL,
            case_id TEXT NOT NULL,
            tags TEXT NOT NULL DEFAULT '[]',     -- JSON list
            outcome TEXT NOT NULL,               -- passed | failed | error | skipped
            passed INTEGER NOT NULL,
            scores TEXT NOT NULL DEFAULT '[]',   -- JSON list of Score dicts
            main_score TEXT,                     -- name of the headline score
            main_value REAL,                     -- its value
            latency_s REAL,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            cost REAL NOT NULL DEFAULT 0,
            cached INTEGER NOT NULL DEFAULT 0,
            retries INTEGER NOT NULL DEFAULT 0,
            finish_reason TEXT,
            error TEXT,
            output TEXT,
            output_truncated INTEGER NOT NULL DEFAULT 0,
            expected TEXT,                       -- JSON
            dataset TEXT,
            recorded TEXT NOT NULL,              -- ISO 8601, UTC
            PRIMARY KEY (run_id, nodeid)
        )""",
        """CREATE TABLE aggregates (
            run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            test TEXT NOT NULL,
            model TEXT NOT NULL,
            metric TEXT NOT NULL,                -- pass_rate, latency_p95, cost, score:NAME, rate:NAME, ...
            value REAL,
            PRIMARY KEY (run_id, test, model, metric)
        )""",
        "CREATE INDEX runs_started ON runs(started)",
        "CREATE INDEX results_case ON results(test, model, case_id)",
    ),
    (  # sharded runs (--shard K/N) and the runs `llmeval merge` builds from them
        "ALTER TABLE runs ADD COLUMN shard TEXT",  # "K/N" for a shard run; NULL otherwise
        "ALTER TABLE runs ADD COLUMN merged_from TEXT",  # JSON list of the shard run ids of a merged run
    ),
    (  # repeats (--repeat N): a row per sample, nodeid NODEID#sJ for J > 0 (`llmeval flaky` reads them)
        "ALTER TABLE results ADD COLUMN sample INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE results ADD COLUMN samples INTEGER NOT NULL DEFAULT 1",
    ),
    (  # the judges of a run and their measured agreement with people (judge_measure.py; label "unmeasured")
        "ALTER TABLE runs ADD COLUMN judges TEXT",  # JSON list of JudgeMeasure dicts; NULL: no judge graded
    ),
]

RESULT_COLUMNS = (
    "run_id",
    "nodeid",
    "test",
    "model",
    "case_id",
    "tags",
    "outcome",
    "passed",
    "scores",
    "main_score",
    "main_value",
    "latency_s",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "cached",
    "retries",
    "finish_reason",
    "error",
    "output",
    "output_truncated",
    "expected",
    "dataset",
    "recorded",
    "sample",
    "samples",
)
# Aggregate fields stored as metrics, in this order; scores and rates follow as score:NAME / rate:NAME.
AGGREGATE_FIELDS = (
    "n",
    "passed",
    "failed",
    "errors",
    "skipped",
    "pass_rate",
    "latency_p50",
    "latency_p95",
    "time_to_last_token_p50",
    "time_to_last_token_p95",
    "s_per_token_p50",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "cost_spent",
    "cost_replayed",
    "cached",
    "retries",
)


class StoreError(Exception):
    """The metrics database cannot be used; the message says why and what to do."""


def iso(ts: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC (second precision)."""
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def scrub(value: Any) -> Any:
    """``redact`` every string inside a JSON-like value."""
    if isinstance(value, str):
        # Shorter strings cannot hold a secret redact() would find (its minimum is 6 characters).
        return redact(value) if len(value) >= 6 else value
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


def truncate(text: str | None, limit: int | None = OUTPUT_LIMIT) -> tuple[str | None, bool]:
    """Cut ``text`` to at most ``limit`` UTF-8 bytes (on a character boundary), marked with its size."""
    if text is None:
        return None, False
    out, original = cut(text, limit)
    return out, original is not None


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)


# -- schema ----------------------------------------------------------------
def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this database lacks, each in its own transaction; return the version.

    Safe against a concurrent run doing the same: the version is re-read under
    the write lock before each step.
    """
    version = schema_version(conn)
    if version > len(MIGRATIONS):
        raise StoreError(
            f"the metrics database has schema version {version}, newer than this pytest-llmeval "
            f"understands ({len(MIGRATIONS)}); upgrade pytest-llmeval or use another --metrics-db"
        )
    for target in range(version + 1, len(MIGRATIONS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(conn) < target:
                for stmt in MIGRATIONS[target - 1]:
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version = {target}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return schema_version(conn)


def connect(path: str | Path, *, create: bool = True, timeout: float | None = None) -> sqlite3.Connection:
    """Open (and migrate) the metrics database in WAL mode; autocommit, explicit transactions.

    ``create=False`` raises :class:`StoreError` when the file does not exist.
    """
    p = Path(path)
    if not create and not p.is_file():
        raise StoreError(
            f"no metrics database at {p}; a pytest run with pytest-llmeval creates it "
            "(e.g. `pytest evals --model NAME`), or point to one with --db PATH"
        )
    if create:
        p.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(
            str(p),
            timeout=BUSY_TIMEOUT_S if timeout is None else timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a killed process loses nothing committed; only a power cut may lose the last commit.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        migrate(conn)
    except sqlite3.DatabaseError as e:
        raise StoreError(f"metrics database {p} cannot be used: {e}") from None
    return conn


# -- records -> rows --------------------------------------------------------
def result_row(run_id: str, rec: CaseResult, limit: int | None = OUTPUT_LIMIT) -> tuple[Any, ...]:
    """The ``results`` row of a record; ``limit`` is the run's output bound (the scheduler cut to it already)."""
    output, was_cut = truncate(redact(rec.output) if rec.output is not None else None, limit)
    values = {
        "run_id": run_id,
        "nodeid": rec.nodeid,
        "test": rec.test,
        "model": rec.model,
        "case_id": rec.case_id,
        "tags": _dumps(list(rec.tags)),
        "outcome": rec.outcome,
        "passed": int(bool(rec.passed)),
        "scores": _dumps(scrub(rec.scores)),
        "main_score": rec.main_score,
        "main_value": rec.main_value(),
        "latency_s": rec.latency_s,
        "prompt_tokens": int(rec.prompt_tokens or 0),
        "completion_tokens": int(rec.completion_tokens or 0),
        "cost": float(rec.cost or 0.0),
        "cached": int(bool(rec.cached)),
        "retries": int(rec.retries or 0),
        "finish_reason": rec.finish_reason,
        "error": redact(rec.error) if rec.error else rec.error,
        "output": output,
        "output_truncated": int(was_cut or bool((rec.extra or {}).get("output_bytes"))),
        "expected": None if rec.expected is None else _dumps(scrub(rec.expected)),
        "dataset": rec.dataset,
        "recorded": iso(time.time()),
        "sample": int(rec.sample or 0),
        "samples": int(rec.samples or 1),
    }
    return tuple(values[c] for c in RESULT_COLUMNS)


def row_to_case_result(row: Any) -> CaseResult:
    """Rebuild a :class:`CaseResult` from a ``results`` row (for aggregation of stored runs)."""
    d = dict(row)
    return CaseResult(
        nodeid=d["nodeid"],
        test=d["test"],
        model=d["model"],
        case_id=d["case_id"],
        tags=json.loads(d["tags"] or "[]"),
        outcome=d["outcome"],
        passed=bool(d["passed"]),
        scores=json.loads(d["scores"] or "[]"),
        main_score=d["main_score"],
        latency_s=d["latency_s"],
        prompt_tokens=d["prompt_tokens"],
        completion_tokens=d["completion_tokens"],
        cost=d["cost"],
        cached=bool(d["cached"]),
        retries=d["retries"],
        error=d["error"],
        output=d["output"],
        expected=json.loads(d["expected"]) if d["expected"] else None,
        finish_reason=d["finish_reason"],
        dataset=d["dataset"],
        sample=int(d.get("sample") or 0),
        samples=int(d.get("samples") or 1),
    )


def flatten_aggregate(a: Aggregate) -> dict[str, float | None]:
    """An aggregate as metric name -> value (the ``aggregates`` table's rows)."""
    out: dict[str, float | None] = {}
    for name in AGGREGATE_FIELDS:
        v = getattr(a, name)
        out[name] = None if v is None else float(v)
    for name, v in a.scores.items():
        out[f"score:{name}"] = None if v is None else float(v)
    for name, v in a.rates.items():
        out[f"rate:{name}"] = float(v)
    if a.repeats is not None:  # with repeats: samples per case, pass@k, pass^k, flaky cases
        r = a.repeats
        out |= {"repeat_k": float(r.k), "mean_pass_rate": r.mean_pass_rate, "pass_at_k": r.pass_at_k}
        out |= {"pass_all_k": r.pass_all_k, "flaky": float(len(r.flaky))}
    return out


def command_line(config: Any) -> str:
    """The command that started the run, redacted."""
    args = [str(a) for a in getattr(config.invocation_params, "args", ()) or ()]
    return redact(shlex.join(["pytest", *args]))
