"""Every run's record: the SQLite metrics database and the run folder.

``open_run(session)`` is called once by the controller (never by an xdist
worker), so a run writes the same rows with and without xdist:

* ``data/metrics.db`` (``--metrics-db`` / ini ``llmeval_metrics_db``): tables
  ``runs``, ``results`` (one row per case result) and ``aggregates`` (one row
  per test, model and metric). The run row goes in at the start with
  ``complete = 0``; results are committed in small batches as they arrive; the
  end updates the run row and writes the aggregates in one transaction. A run
  killed half-way therefore leaves a consistent database that shows it
  incomplete. A run that reports no eval item (a plain test run) deletes its
  row at the end and leaves no folder.
* ``data/runs/<run id>/`` (``--output`` / ini ``llmeval_runs_dir``):
  ``results.jsonl`` (a line per result, flushed as it arrives) and
  ``summary.json`` at the end; the report module adds ``report.html``.

Secrets never reach either: the command line, errors, outputs and scores pass
through :func:`pytest_llmeval.redact.redact`. A locked, read-only or corrupt
database gives one warning and the run goes on without it.
"""

from __future__ import annotations

import json
import re
import shlex
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .redact import redact
from .results import Aggregate, CaseResult

DEFAULT_DB = "data/metrics.db"
DEFAULT_RUNS_DIR = "data/runs"
OUTPUT_LIMIT = 64 * 1024  # bytes of model output kept per result row
FLUSH_EVERY_N = 20
FLUSH_EVERY_S = 2.0
BUSY_TIMEOUT_S = 5.0
SUMMARY_FORMAT = "pytest-llmeval-run"
SUMMARY_VERSION = 1

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


def truncate(text: str | None, limit: int = OUTPUT_LIMIT) -> tuple[str | None, bool]:
    """Cut ``text`` to at most ``limit`` UTF-8 bytes (on a character boundary)."""
    if text is None:
        return None, False
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text, False
    return raw[:limit].decode("utf-8", "ignore"), True


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
def result_row(run_id: str, rec: CaseResult) -> tuple[Any, ...]:
    output, cut = truncate(redact(rec.output) if rec.output is not None else None)
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
        "output_truncated": int(cut),
        "expected": None if rec.expected is None else _dumps(scrub(rec.expected)),
        "dataset": rec.dataset,
        "recorded": iso(time.time()),
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
    return out


def command_line(config: Any) -> str:
    """The command that started the run, redacted."""
    args = [str(a) for a in getattr(config.invocation_params, "args", ()) or ()]
    return redact(shlex.join(["pytest", *args]))


def _model_specs(session: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in session.selected:
        try:
            spec = session.spec(name)
        except Exception:
            continue
        out[name] = scrub(
            {
                "type": spec.type,
                "model": spec.model or spec.path,
                "adapter": spec.adapter_path(),
                "spec_hash": spec.spec_hash(),
            }
        )
    return out


def _stats(session: Any) -> dict[str, Any] | None:
    st = getattr(getattr(session, "scheduler", None), "stats", None)
    if st is None:
        return None
    return {k: getattr(st, k) for k in ("submitted", "done", "cached", "failed", "retries", "spent")}


# -- the store ----------------------------------------------------------------
class MetricsStore:
    """One run's writer: the database rows (batched) and the run folder files (line by line).

    Use from the controller's main thread; a small daemon thread only commits
    results that have waited :data:`FLUSH_EVERY_S`.
    """

    def __init__(
        self,
        run_id: str,
        db_path: Path | None,
        run_dir: Path | None,
        run_row: dict[str, Any],
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.run_id = run_id
        self.db_path = db_path
        self.run_dir = run_dir
        self._run_row = run_row
        self._run_inserted = False
        self._warn_fn = warn or (lambda msg: print(msg, file=sys.stderr))
        self._warned: set[str] = set()
        self._pending_warnings: list[str] = []
        self._lock = threading.RLock()
        self._pending: list[tuple[Any, ...]] = []
        self._last_flush = time.monotonic()
        self._finished = False
        self.conn: sqlite3.Connection | None = None
        self._jsonl: Any = None
        if db_path is not None:
            try:
                self.conn = connect(db_path)
            except (StoreError, OSError) as e:
                self._warn("open", f"metrics not recorded: {e}")
        self.n_results = 0
        self.flush(force=True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.conn is not None:
            self._thread = threading.Thread(target=self._flusher, name="llmeval-metrics", daemon=True)
            self._thread.start()

    # -- warnings: once per kind, printed from the main thread ------------------
    def _warn(self, kind: str, message: str) -> None:
        with self._lock:
            if kind in self._warned:
                return
            self._warned.add(kind)
            self._pending_warnings.append(f"llmeval: warning: {redact(message)}")
        if threading.current_thread() is threading.main_thread():
            self._emit_warnings()

    def _emit_warnings(self) -> None:
        with self._lock:
            msgs, self._pending_warnings = self._pending_warnings, []
        for m in msgs:
            try:
                self._warn_fn(m)
            except Exception:
                pass

    # -- writing -------------------------------------------------------------------
    def add_result(self, rec: CaseResult) -> None:
        """Record one finished item: a JSONL line now, a database row with the next batch."""
        if self._finished:
            return
        self.n_results += 1
        if self._jsonl is None and self.run_dir is not None:
            # The folder appears with the first result: a run without evals leaves none.
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self._jsonl = open(self.run_dir / "results.jsonl", "w", encoding="utf-8")  # noqa: SIM115
            except OSError as e:
                self._warn("run_dir", f"run folder {self.run_dir} not written: {e}")
                self.run_dir = None
        if self._jsonl is not None:
            try:
                line = scrub({"run_id": self.run_id, **asdict(rec)})
                self._jsonl.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
                self._jsonl.flush()
            except (OSError, ValueError) as e:
                self._warn("jsonl", f"results.jsonl not written: {e}")
        if self.conn is not None:
            with self._lock:
                self._pending.append(result_row(self.run_id, rec))
                due = (
                    len(self._pending) >= FLUSH_EVERY_N
                    or time.monotonic() - self._last_flush >= FLUSH_EVERY_S
                )
            if due:
                self.flush()
        self._emit_warnings()

    def _flusher(self) -> None:
        while not self._stop.wait(FLUSH_EVERY_S / 2):
            with self._lock:
                due = self._pending and time.monotonic() - self._last_flush >= FLUSH_EVERY_S
            if due:
                self.flush()

    def flush(self, force: bool = False, extra: Callable[[sqlite3.Connection], None] | None = None) -> bool:
        """Commit the run row (once) and pending results, plus ``extra`` writes, in one transaction.

        On a locked database the rows stay pending for the next try; on a
        corrupt one the database is dropped for the rest of the run.
        """
        with self._lock:
            conn = self.conn
            if conn is None or (not force and not self._pending and self._run_inserted):
                return False
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if not self._run_inserted:
                        cols = list(self._run_row)
                        conn.execute(
                            f"INSERT OR REPLACE INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                            [self._run_row[c] for c in cols],
                        )
                    if self._pending:
                        conn.executemany(
                            f"INSERT OR REPLACE INTO results ({', '.join(RESULT_COLUMNS)}) "
                            f"VALUES ({', '.join('?' * len(RESULT_COLUMNS))})",
                            self._pending,
                        )
                    if extra is not None:
                        extra(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as e:
                # Locked or busy (another run, a reader holding a lock): keep the rows, try again later.
                self._warn("locked", f"metrics database {self.db_path}: write failed ({e}); will retry")
                return False
            except sqlite3.DatabaseError as e:
                self._warn("corrupt", f"metrics database {self.db_path} failed ({e}); not recording metrics")
                self._drop_conn()
                return False
            self._run_inserted = True
            self._pending.clear()
            self._last_flush = time.monotonic()
            return True

    def _drop_conn(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def finish(self, session: Any, complete: bool) -> None:
        """Write the end of the run: run row, aggregates and summary.json; then close."""
        if self._finished:
            return
        self._finished = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        ended = time.time()
        verdict = getattr(session, "verdict", None)
        verdict_dict = scrub(verdict.to_dict()) if verdict is not None else None
        pt_session = getattr(session, "session", None)
        exit_status = getattr(pt_session, "exitstatus", None)
        report_path = getattr(session, "report_path", None)
        aggregates: list[Aggregate] = list(getattr(session, "aggregates", []) or [])
        update = {
            "ended": iso(ended),
            "duration_s": round(ended - float(session.started), 3),
            "verdict": None if verdict_dict is None else _dumps(verdict_dict),
            "gate_passed": None if verdict is None else int(bool(verdict.passed)),
            "complete": int(bool(complete)),
            "exit_status": None if exit_status is None else int(exit_status),
            "report_path": None if report_path is None else str(report_path),
            "stats": _dumps(_stats(session)),
            "datasets": _dumps(dict(getattr(session, "datasets", {}) or {})),
        }

        def write_end(conn: sqlite3.Connection) -> None:
            if not self.n_results:
                # No eval item reported (a plain test run, everything deselected): no record.
                conn.execute("DELETE FROM runs WHERE id = ?", (self.run_id,))
                return
            conn.execute(
                f"UPDATE runs SET {', '.join(f'{k} = ?' for k in update)} WHERE id = ?",
                [*update.values(), self.run_id],
            )
            conn.execute("DELETE FROM aggregates WHERE run_id = ?", (self.run_id,))
            conn.executemany(
                "INSERT INTO aggregates (run_id, test, model, metric, value) VALUES (?, ?, ?, ?, ?)",
                [
                    (self.run_id, a.test, a.model, metric, value)
                    for a in aggregates
                    for metric, value in flatten_aggregate(a).items()
                ],
            )

        if self.conn is not None and not self.flush(force=True, extra=write_end):
            self._warn("finish", f"the end of run {self.run_id} was not recorded in {self.db_path}")
        if self.run_dir is not None and self.n_results:
            self._write_summary(session, {**self._run_row, **update}, verdict_dict, aggregates)
        self.close()
        self._emit_warnings()

    def _write_summary(
        self, session: Any, run: dict[str, Any], verdict: dict[str, Any] | None, aggregates: list[Aggregate]
    ) -> None:
        from .gate import write_json_atomic

        assert self.run_dir is not None
        data = {
            "format": SUMMARY_FORMAT,
            "version": SUMMARY_VERSION,
            "run": {
                **{
                    k: v
                    for k, v in run.items()
                    if k not in ("models", "model_specs", "datasets", "stats", "verdict")
                },
                "models": json.loads(run.get("models") or "[]"),
                "model_specs": json.loads(run.get("model_specs") or "{}"),
                "datasets": json.loads(run.get("datasets") or "{}"),
                "stats": json.loads(run["stats"]) if run.get("stats") else None,
                "n_results": len(getattr(session, "results", {}) or {}),
            },
            "verdict": verdict,
            "aggregates": [scrub(a.to_dict()) for a in aggregates],
            "model_comparisons": [mc.to_dict() for mc in getattr(session, "model_comparisons", []) or []],
            "files": {"results": "results.jsonl", "report": _relative(run.get("report_path"), self.run_dir)},
        }
        try:
            write_json_atomic(self.run_dir / "summary.json", data)
        except OSError as e:
            self._warn("summary", f"summary.json not written: {e}")

    def close(self) -> None:
        self._stop.set()
        if self._jsonl is not None:
            try:
                self._jsonl.close()
            except OSError:
                pass
            self._jsonl = None
        with self._lock:
            self._drop_conn()


def _relative(path: str | None, base: Path) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


# -- opening a run from the plugin ---------------------------------------------
def _terminal_warn(config: Any) -> Callable[[str], None]:
    def warn(message: str) -> None:
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.ensure_newline()
            tr.write_line(message, yellow=True)
        else:
            print(message, file=sys.stderr)

    return warn


def _path_option(config: Any, option: str, ini: str) -> Path:
    """An option is relative to the invocation directory (as typed); an ini key to the rootdir."""
    opt = config.getoption(option)
    path = Path(opt or config.getini(ini))
    if not path.is_absolute():
        path = (Path(config.invocation_params.dir) if opt else Path(config.rootpath)) / path
    return path


def db_path_for(config: Any) -> Path:
    return _path_option(config, "metrics_db", "llmeval_metrics_db")


def run_dir_for(config: Any, run_id: str) -> Path:
    """``--output DIR`` itself, else ``<llmeval_runs_dir>/<run id>``."""
    if config.getoption("llmeval_output"):
        return _path_option(config, "llmeval_output", "llmeval_runs_dir")
    runs = Path(config.getini("llmeval_runs_dir") or DEFAULT_RUNS_DIR)
    return (runs if runs.is_absolute() else Path(config.rootpath) / runs) / run_id


def open_run(session: Any) -> tuple[MetricsStore, Path | None]:
    """Start recording ``session``'s run: the run row (incomplete) and the run folder."""
    from . import __version__
    from .gate import _git_commit

    config = session.config
    run_dir = run_dir_for(config, session.run_id)
    run_row = {
        "id": session.run_id,
        "started": iso(session.started),
        "git_commit": _git_commit(config.rootpath),
        "command": command_line(config),
        "rootdir": str(config.rootpath),
        "models": _dumps(list(session.selected)),
        "model_specs": _dumps(_model_specs(session)),
        "datasets": _dumps(dict(session.datasets)),
        "plugin_version": __version__,
        "complete": 0,
        "run_dir": str(run_dir),
    }
    store = MetricsStore(session.run_id, db_path_for(config), run_dir, run_row, warn=_terminal_warn(config))
    return store, store.run_dir


# -- reading ----------------------------------------------------------------------
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
    for key in ("models", "model_specs", "datasets", "verdict", "stats"):
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
