"""Every run's record: the SQLite metrics database and the run folder.

``open_run(config, ...)`` is called once by the controller (never by an xdist
worker), so a run writes the same rows with and without xdist. Nothing is
written before the first result arrives, so a session without eval items
creates no database and no folder:

* ``data/metrics.db`` (``--metrics-db`` / ini ``llmeval_metrics_db``; schema in
  :mod:`.metrics_db`): the run row goes in with the first result, with
  ``complete = 0``; results are committed in small batches as they arrive; the
  end (:meth:`MetricsStore.finish`, given the run's :class:`RunOutcome`)
  updates the run row and writes the aggregates in one transaction. A run
  killed half-way therefore leaves a consistent database that shows it
  incomplete.
* ``data/runs/<run id>/`` (``--output`` / ini ``llmeval_runs_dir``):
  ``results.jsonl`` (a line per result, flushed as it arrives) and
  ``summary.json`` at the end; the report module adds ``report.html``.

Secrets never reach either: the command line, errors, outputs and scores pass
through :func:`pytest_llmeval.redact.redact`. A locked, read-only or corrupt
database gives one warning and the run goes on without it.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .judge_measure import judge_metrics
from .metrics_db import (
    MIGRATIONS,
    OUTPUT_LIMIT,
    RESULT_COLUMNS,
    StoreError,
    _dumps,
    connect,
    flatten_aggregate,
    iso,
    result_row,
    schema_version,
    scrub,
)
from .redact import redact
from .results import Aggregate, CaseResult
from .runs import load_run, recent_runs, resolve_run

if TYPE_CHECKING:
    from .outcome import RunOutcome

DEFAULT_RUNS_DIR = "data/runs"
FLUSH_EVERY_N = 20
FLUSH_EVERY_S = 2.0
SUMMARY_FORMAT = "pytest-llmeval-run"
SUMMARY_VERSION = 1


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
        run_row: dict[str, Any] | Callable[[], dict[str, Any]],
        warn: Callable[[str], None] | None = None,
        lazy: bool = False,
        keep_empty: bool = False,
        output_limit: int | None = OUTPUT_LIMIT,
    ) -> None:
        self.run_id = run_id
        self.output_limit = output_limit  # the run's output bound (records arrive cut to it already)
        self.db_path = db_path
        self.run_dir = run_dir
        self._row_source = run_row
        self._run_row: dict[str, Any] = {}
        self._run_inserted = False
        self._warn_fn = warn or (lambda msg: print(msg, file=sys.stderr))
        self._warned: set[str] = set()
        self._pending_warnings: list[str] = []
        self._lock = threading.RLock()
        self._pending: list[tuple[Any, ...]] = []
        self._last_flush = time.monotonic()
        self._finished = False
        self._opened = False
        self.conn: sqlite3.Connection | None = None
        self._jsonl: Any = None
        self.n_results = 0
        # A shard records its run even when all its cases fell to other shards: the merge needs it.
        self.keep_empty = keep_empty
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not lazy:
            self._open()

    def _open(self) -> None:
        """Connect, insert the (incomplete) run row, start the flusher. A lazy store does this at
        its first result, so a session without eval items creates no database."""
        if self._opened:
            return
        self._opened = True
        src = self._row_source
        self._run_row = dict(src() if callable(src) else src)
        if self.db_path is not None:
            try:
                self.conn = connect(self.db_path)
            except (StoreError, OSError) as e:
                self._warn("open", f"metrics not recorded: {e}")
        self.flush(force=True)
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
        self._open()
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
                self._pending.append(result_row(self.run_id, rec, self.output_limit))
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

    def finish(self, outcome: RunOutcome) -> None:
        """Write the end of the run: run row, aggregates and summary.json; then close.

        A lazy store that never received a result writes nothing at all.
        """
        if self._finished:
            return
        self._finished = True
        self._stop.set()
        if not self._opened:
            return
        if self._thread is not None:
            self._thread.join(timeout=5)
        verdict = outcome.verdict
        verdict_dict = scrub(verdict.to_dict()) if verdict is not None else None
        aggregates = list(outcome.aggregates)
        update = {
            "ended": iso(outcome.ended),
            "duration_s": round(outcome.ended - float(outcome.started), 3),
            "verdict": None if verdict_dict is None else _dumps(verdict_dict),
            "gate_passed": None if verdict is None else int(bool(verdict.passed)),
            "complete": int(bool(outcome.complete)),
            "exit_status": int(outcome.exit_status),
            "report_path": None if outcome.report_path is None else str(outcome.report_path),
            "stats": _dumps(outcome.stats.to_dict() if outcome.stats is not None else None),
            "datasets": _dumps(dict(outcome.datasets)),
        }
        if outcome.judges:
            update["judges"] = _dumps([scrub(m.to_dict()) for m in outcome.judges])
        if outcome.model_specs:  # a shard's row may be written before collection loaded the models
            update["model_specs"] = _dumps(dict(outcome.model_specs))

        def write_end(conn: sqlite3.Connection) -> None:
            if not self.n_results and not self.keep_empty:
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
                    for metric, value in {**flatten_aggregate(a), **judge_metrics(outcome.judges, a)}.items()
                ],
            )

        if self.conn is not None and not self.flush(force=True, extra=write_end):
            self._warn("finish", f"the end of run {self.run_id} was not recorded in {self.db_path}")
        if self.run_dir is not None and (self.n_results or self.keep_empty):
            if not self.n_results:
                self._write_empty_results()
            self._write_summary(outcome, {**self._run_row, **update}, verdict_dict, aggregates)
        self.close()
        self._emit_warnings()

    def _write_empty_results(self) -> None:
        assert self.run_dir is not None
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "results.jsonl").write_text("", encoding="utf-8")
        except OSError as e:
            self._warn("run_dir", f"run folder {self.run_dir} not written: {e}")

    def _write_summary(
        self,
        outcome: RunOutcome,
        run: dict[str, Any],
        verdict: dict[str, Any] | None,
        aggregates: list[Aggregate],
    ) -> None:
        from .baseline import write_json_atomic

        assert self.run_dir is not None
        data = {
            "format": SUMMARY_FORMAT,
            "version": SUMMARY_VERSION,
            "run": {
                **{
                    k: v
                    for k, v in run.items()
                    if k
                    not in ("models", "model_specs", "datasets", "stats", "verdict", "shard", "merged_from")
                },
                "models": json.loads(run.get("models") or "[]"),
                "model_specs": json.loads(run.get("model_specs") or "{}"),
                "datasets": json.loads(run.get("datasets") or "{}"),
                "stats": json.loads(run["stats"]) if run.get("stats") else None,
                "n_results": len(outcome.records),
                # {"index": K, "count": N} for a shard run (llmeval merge reads it), else null
                "shard": _shard_dict(run.get("shard")),
                "merged_from": json.loads(run["merged_from"]) if run.get("merged_from") else None,
            },
            "verdict": verdict,
            "judge_agreement": outcome.judge_agreement,
            "judges": [scrub(m.to_dict()) for m in outcome.judges],
            "aggregates": [scrub(a.to_dict()) for a in aggregates],
            "model_comparisons": [mc.to_dict() for mc in outcome.model_comparisons],
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


def _shard_dict(text: str | None) -> dict[str, int] | None:
    if not text:
        return None
    index, count = str(text).split("/")
    return {"index": int(index), "count": int(count)}


def _relative(path: str | None, base: Path) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


__all__ = [  # the database names that callers reach through this module
    "FLUSH_EVERY_N",
    "MIGRATIONS",
    "OUTPUT_LIMIT",
    "MetricsStore",
    "StoreError",
    "connect",
    "iso",
    "load_run",
    "recent_runs",
    "resolve_run",
    "schema_version",
    "scrub",
]
