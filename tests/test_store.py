"""The metrics database and run folder: contents, xdist, a killed run, locks, corruption, migrations."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _fake_openai import RUN_ARGS, FakeOpenAIServer, answer, write_suite, wrong_for  # noqa: E402

from pytest_llmeval import metrics_db, store  # noqa: E402
from pytest_llmeval.outcome import RunOutcome  # noqa: E402
from pytest_llmeval.results import CaseResult, aggregate  # noqa: E402

pytest_plugins = ["pytester"]

CASES = [("a", "A"), ("b", "B"), ("c", "C")]


def rows(db: Path, sql: str, *params) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def test_run_writes_database_and_run_folder(pytester: pytest.Pytester, fake_openai: FakeOpenAIServer) -> None:
    fake_openai.responder = wrong_for("B")
    write_suite(pytester.path, fake_openai.base_url, CASES)
    result = pytester.runpytest(*RUN_ARGS)
    result.assert_outcomes(passed=2, failed=1)
    db = pytester.path / "data" / "metrics.db"

    (run,) = rows(db, "SELECT * FROM runs")
    assert run["complete"] == 1 and run["exit_status"] == 1
    assert run["ended"] and run["duration_s"] >= 0
    assert json.loads(run["models"]) == ["fake"]
    assert "--model fake" in run["command"]
    assert run["plugin_version"]
    assert run["verdict"] is None and run["gate_passed"] is None  # no baseline: not gated
    assert json.loads(run["model_specs"])["fake"]["type"] == "openai"
    assert list(json.loads(run["datasets"])) == ["test_evals.py::test_answer"]

    res = {r["case_id"]: r for r in rows(db, "SELECT * FROM results WHERE run_id = ?", run["id"])}
    assert sorted(res) == ["a", "b", "c"]
    assert [res[c]["outcome"] for c in "abc"] == ["passed", "failed", "passed"]
    assert res["b"]["output"] == "nope" and res["b"]["passed"] == 0
    assert "expected 'B', got 'nope'" in res["b"]["error"]
    assert res["a"]["main_value"] == 1.0 and res["b"]["main_value"] == 0.0
    assert json.loads(res["a"]["scores"])[0]["name"] == "exact_match"
    assert res["a"]["prompt_tokens"] > 0 and res["a"]["completion_tokens"] == 1
    assert res["a"]["latency_s"] > 0 and res["a"]["finish_reason"] == "stop"
    assert res["a"]["nodeid"] == "test_evals.py::test_answer[fake-a]"
    assert json.loads(res["a"]["expected"]) == "A"

    aggs = {r["metric"]: r["value"] for r in rows(db, "SELECT * FROM aggregates WHERE run_id = ?", run["id"])}
    assert aggs["n"] == 3 and aggs["passed"] == 2 and aggs["failed"] == 1
    assert aggs["pass_rate"] == pytest.approx(2 / 3)
    assert aggs["score:exact_match"] == pytest.approx(2 / 3)
    assert aggs["latency_p95"] > 0

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(metrics_db.MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()

    run_dir = pytester.path / "data" / "runs" / run["id"]
    lines = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    assert sorted(x["case_id"] for x in lines) == ["a", "b", "c"]
    assert all(x["run_id"] == run["id"] for x in lines)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["format"] == "pytest-llmeval-run"
    assert summary["run"]["complete"] == 1 and summary["run"]["n_results"] == 3
    assert summary["aggregates"][0]["pass_rate"] == pytest.approx(2 / 3)
    result.stdout.fnmatch_lines([f"run folder: {run_dir}"])


def test_xdist_writes_the_same_rows_from_the_controller(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.responder = wrong_for("C")
    write_suite(pytester.path, fake_openai.base_url, CASES)
    pytester.runpytest(*RUN_ARGS).assert_outcomes(passed=2, failed=1)
    result = pytester.runpytest_subprocess(*RUN_ARGS, "-p", "xdist", "-n", "2")
    result.assert_outcomes(passed=2, failed=1)
    db = pytester.path / "data" / "metrics.db"
    runs = rows(db, "SELECT * FROM runs ORDER BY rowid")
    assert len(runs) == 2 and all(r["complete"] == 1 for r in runs)
    assert "-n 2" in runs[1]["command"]

    def content(run_id: str) -> list[tuple]:
        return [
            (r["nodeid"], r["outcome"], r["output"], r["main_value"], r["scores"])
            for r in rows(db, "SELECT * FROM results WHERE run_id = ? ORDER BY nodeid", run_id)
        ]

    assert content(runs[0]["id"]) == content(runs[1]["id"])
    assert len(content(runs[1]["id"])) == 3
    assert rows(db, "SELECT COUNT(*) AS n FROM results")[0]["n"] == 6  # no worker wrote rows of its own

    def aggs(run_id: str) -> dict:
        return {
            r["metric"]: r["value"]
            for r in rows(db, "SELECT * FROM aggregates WHERE run_id = ?", run_id)
            if not r["metric"].startswith("latency")
        }

    assert aggs(runs[0]["id"]) == aggs(runs[1]["id"])
    lines = (pytester.path / "data" / "runs" / runs[1]["id"] / "results.jsonl").read_text().splitlines()
    assert len(lines) == 3


def test_killed_run_leaves_a_consistent_incomplete_database(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    # Case a answers at once; b and c hang, so the run is killed with one result recorded.
    release = threading.Event()

    def hold(prompt: str) -> str:
        if prompt != "A":
            release.wait(60)
        return prompt

    fake_openai.responder = answer(hold)
    write_suite(pytester.path, fake_openai.base_url, CASES)
    db = pytester.path / "data" / "metrics.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", *RUN_ARGS],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        n = 0
        while time.monotonic() < deadline and n == 0:
            time.sleep(0.2)
            if db.is_file():
                try:
                    n = rows(db, "SELECT COUNT(*) AS n FROM results")[0]["n"]
                except sqlite3.OperationalError:  # schema not created yet
                    n = 0
        assert n == 1, "the first result was not committed in time"
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        release.set()

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    (run,) = rows(db, "SELECT * FROM runs")
    assert run["complete"] == 0 and run["ended"] is None and run["exit_status"] is None
    (res,) = rows(db, "SELECT * FROM results")
    assert res["case_id"] == "a" and res["outcome"] == "passed"
    jsonl = pytester.path / "data" / "runs" / run["id"] / "results.jsonl"
    assert len(jsonl.read_text().splitlines()) == 1

    # The next run works on the same database and the killed one stays marked incomplete.
    pytester.runpytest(*RUN_ARGS).assert_outcomes(passed=3)
    runs = rows(db, "SELECT id, complete FROM runs ORDER BY rowid")
    assert [r["complete"] for r in runs] == [0, 1]
    assert rows(db, "SELECT COUNT(*) AS n FROM results WHERE run_id = ?", runs[1]["id"])[0]["n"] == 3
    from pytest_llmeval.cli import main

    assert main(["--db", str(db), "runs"]) == 0


def test_metrics_db_and_output_options(pytester: pytest.Pytester, fake_openai: FakeOpenAIServer) -> None:
    write_suite(pytester.path, fake_openai.base_url, CASES[:2])
    pytester.runpytest(*RUN_ARGS, "--metrics-db", "elsewhere/m.db", "--output", "out/run1").assert_outcomes(
        passed=2
    )
    assert not (pytester.path / "data").exists()
    assert len(rows(pytester.path / "elsewhere" / "m.db", "SELECT * FROM results")) == 2
    assert (pytester.path / "out" / "run1" / "summary.json").is_file()
    assert len((pytester.path / "out" / "run1" / "results.jsonl").read_text().splitlines()) == 2

    (pytester.path / "pytest.ini").write_text(
        "[pytest]\nllmeval_metrics_db = ini.db\nllmeval_runs_dir = folders\n"
    )
    pytester.runpytest(*RUN_ARGS).assert_outcomes(passed=2)
    (run,) = rows(pytester.path / "ini.db", "SELECT * FROM runs")
    assert (pytester.path / "folders" / run["id"] / "summary.json").is_file()

    pytester.runpytest(*RUN_ARGS, "--no-metrics", "--metrics-db", "none.db").assert_outcomes(passed=2)
    assert not (pytester.path / "none.db").exists()


def test_a_run_without_eval_items_leaves_no_record(pytester: pytest.Pytester) -> None:
    (pytester.path / "pytest.ini").write_text("[pytest]\n")
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    db = pytester.path / "data" / "metrics.db"
    assert not db.exists() or rows(db, "SELECT * FROM runs") == []
    assert not (pytester.path / "data" / "runs").exists() or not any(
        (pytester.path / "data" / "runs").iterdir()
    )


def test_corrupt_database_warns_and_the_run_goes_on(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer
) -> None:
    write_suite(pytester.path, fake_openai.base_url, CASES[:2])
    db = pytester.path / "data" / "metrics.db"
    db.parent.mkdir()
    db.write_bytes(b"this is not a database\n" * 200)
    result = pytester.runpytest(*RUN_ARGS)
    result.assert_outcomes(passed=2)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*llmeval: warning: metrics not recorded*metrics.db*"])
    assert len([line for line in result.stdout.lines if "llmeval: warning" in line]) == 1
    folders = list((pytester.path / "data" / "runs").iterdir())
    assert len(folders) == 1 and (folders[0] / "summary.json").is_file()


def test_newer_schema_is_not_touched(pytester: pytest.Pytester, fake_openai: FakeOpenAIServer) -> None:
    write_suite(pytester.path, fake_openai.base_url, CASES[:1])
    db = pytester.path / "data" / "metrics.db"
    db.parent.mkdir()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    result = pytester.runpytest(*RUN_ARGS)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*warning: metrics not recorded*schema version 99*upgrade pytest-llmeval*"])
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
    conn.close()


def test_locked_database_warns_once_and_the_run_goes_on(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_db, "BUSY_TIMEOUT_S", 0.1)
    write_suite(pytester.path, fake_openai.base_url, CASES)
    db = pytester.path / "data" / "metrics.db"
    metrics_db.connect(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = pytester.runpytest(*RUN_ARGS)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    result.assert_outcomes(passed=3)
    assert result.ret == 0
    warnings = [line for line in result.stdout.lines if "llmeval: warning" in line]
    assert len([w for w in warnings if "write failed" in w]) == 1, warnings
    assert any("was not recorded" in w for w in warnings)
    assert rows(db, "SELECT * FROM runs") == []
    # The run folder does not depend on the database.
    (folder,) = (pytester.path / "data" / "runs").iterdir()
    assert len((folder / "results.jsonl").read_text().splitlines()) == 3


def _outcome(run_id: str, results: list[CaseResult]) -> RunOutcome:
    return RunOutcome(
        run_id=run_id,
        started=time.time() - 1,
        ended=time.time(),
        models=("m",),
        model_specs={},
        datasets={},
        records=tuple(results),
        aggregates=tuple(aggregate(results)),
    )


def _rec(case_id: str, output: str = "ok") -> CaseResult:
    return CaseResult(
        nodeid=f"t.py::t[m-{case_id}]",
        test="t.py::t",
        model="m",
        case_id=case_id,
        outcome="passed",
        passed=True,
        scores=[{"name": "s", "value": 1.0, "passed": True}],
        latency_s=0.1,
        output=output,
    )


def _store(tmp_path: Path, run_id: str, warnings: list[str]) -> store.MetricsStore:
    row = {"id": run_id, "started": store.iso(time.time()), "models": '["m"]', "complete": 0}
    return store.MetricsStore(
        run_id, tmp_path / "m.db", tmp_path / "runs" / run_id, row, warn=warnings.append
    )


def test_batches_wait_for_a_released_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_db, "BUSY_TIMEOUT_S", 0.1)
    warnings: list[str] = []
    st = _store(tmp_path, "r1", warnings)
    holder = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    recs = [_rec(c) for c in "abc"]
    for r in recs:
        st.add_result(r)
    assert not st.flush()  # still locked: rows stay pending
    holder.execute("ROLLBACK")
    holder.close()
    st.finish(_outcome("r1", recs))
    assert len(warnings) == 1 and "write failed" in warnings[0]
    assert rows(tmp_path / "m.db", "SELECT complete FROM runs") == [{"complete": 1}]
    assert len(rows(tmp_path / "m.db", "SELECT * FROM results")) == 3


def test_results_commit_in_batches_and_by_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "FLUSH_EVERY_S", 0.3)
    st = _store(tmp_path, "r1", [])
    db = tmp_path / "m.db"
    assert rows(db, "SELECT complete FROM runs") == [{"complete": 0}]  # inserted at the start
    st._last_flush = time.monotonic()
    st.add_result(_rec("a"))
    assert len(rows(db, "SELECT * FROM results")) == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not rows(db, "SELECT * FROM results"):
        time.sleep(0.05)
    assert len(rows(db, "SELECT * FROM results")) == 1  # the background flush after FLUSH_EVERY_S
    monkeypatch.setattr(store, "FLUSH_EVERY_S", 3600)
    st._last_flush = time.monotonic()
    recs = [_rec(f"x{i}") for i in range(store.FLUSH_EVERY_N)]
    for r in recs[:-1]:
        st.add_result(r)
    assert len(rows(db, "SELECT * FROM results")) == 1
    st.add_result(recs[-1])
    assert len(rows(db, "SELECT * FROM results")) == 1 + store.FLUSH_EVERY_N
    st.finish(_outcome("r1", [_rec("a"), *recs]))


def test_long_outputs_are_truncated(tmp_path: Path) -> None:
    st = _store(tmp_path, "r1", [])
    big = "é" * (store.OUTPUT_LIMIT)  # two bytes each: twice the limit
    st.add_result(_rec("a", big))
    st.finish(_outcome("r1", [_rec("a", big)]))
    (row,) = rows(tmp_path / "m.db", "SELECT output, output_truncated FROM results")
    assert row["output_truncated"] == 1
    assert len(row["output"].encode()) <= store.OUTPUT_LIMIT
    kept, _, mark = row["output"].partition("\n[output cut")
    assert kept == "é" * len(kept) and len(kept) > store.OUTPUT_LIMIT // 2 - 64
    assert mark == f" by pytest-llmeval: {2 * store.OUTPUT_LIMIT:,} bytes in all]"


def test_migrations_upgrade_an_older_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "m.db"
    st = _store(tmp_path, "old", [])
    st.add_result(_rec("a"))
    st.finish(_outcome("old", [_rec("a")]))
    step = ("ALTER TABLE runs ADD COLUMN note TEXT", "CREATE INDEX results_outcome ON results(outcome)")
    monkeypatch.setattr(metrics_db, "MIGRATIONS", [*metrics_db.MIGRATIONS, step])
    conn = metrics_db.connect(db)
    assert metrics_db.schema_version(conn) == len(metrics_db.MIGRATIONS)
    assert conn.execute("SELECT id, note FROM runs").fetchall()[0]["id"] == "old"
    conn.close()
    # A step that fails leaves the database at the previous version.
    monkeypatch.setattr(
        metrics_db, "MIGRATIONS", [*metrics_db.MIGRATIONS, ("ALTER TABLE nowhere ADD COLUMN x",)]
    )
    with pytest.raises(store.StoreError):
        metrics_db.connect(db)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(metrics_db.MIGRATIONS) - 1
    conn.close()


def test_resolve_run_ids(tmp_path: Path) -> None:
    for rid in ("20250101-000000-aaaaaa", "20250102-000000-bbbbbb"):
        st = store.MetricsStore(
            rid, tmp_path / "m.db", None, {"id": rid, "started": rid[:8], "models": "[]", "complete": 0}
        )
        st.add_result(_rec("a"))
        st.finish(_outcome(rid, [_rec("a")]))
    conn = store.connect(tmp_path / "m.db", create=False)
    assert store.resolve_run(conn, "latest") == "20250102-000000-bbbbbb"
    assert store.resolve_run(conn, "latest~1") == "20250101-000000-aaaaaa"
    assert store.resolve_run(conn, "20250101") == "20250101-000000-aaaaaa"
    with pytest.raises(KeyError, match="ambiguous"):
        store.resolve_run(conn, "2025")
    with pytest.raises(KeyError, match="recent runs: 20250102-000000-bbbbbb, 20250101-000000-aaaaaa"):
        store.resolve_run(conn, "nope")
    with pytest.raises(KeyError, match="no run latest~5"):
        store.resolve_run(conn, "latest~5")
    conn.close()
    with pytest.raises(store.StoreError, match="no metrics database"):
        store.connect(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()
