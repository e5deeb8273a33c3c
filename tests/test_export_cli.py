"""Exports (CSV, JSON, Prometheus, Pushgateway) and the ``llmeval`` console, on real runs against a fake server."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))
from _fake_openai import RUN_ARGS, FakeOpenAIServer, answer, write_suite, wrong_for  # noqa: E402
from _runs import record_runs  # noqa: E402

from pytest_llmeval import tracing  # noqa: E402
from pytest_llmeval.cli import main  # noqa: E402

pytest_plugins = ["pytester"]

CASES = [(c, c.upper()) for c in "abcdef"]
CANARY = "cnry-4f1d9e2a7b6c5d8e"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two real runs in one database: all right, then c, d, e, f wrong."""
    root = tmp_path_factory.mktemp("runs")
    with FakeOpenAIServer() as srv:
        write_suite(root, srv.base_url, CASES)
        return record_runs(root, srv, [wrong_for(), wrong_for("C", "D", "E", "F")])


def test_runs_lists_both(two_runs: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", two_runs["db"], "runs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["run", "id", "started"]
    assert out[1].startswith(two_runs["cur"]) and out[2].startswith(two_runs["base"])  # newest first
    assert "fake" in out[1] and "33.3%" in out[1] and out[1].endswith("yes")
    assert "100.0%" in out[2]
    # --db after the subcommand works too; --json gives the rows
    assert main(["runs", "--db", two_runs["db"], "--json", "--limit", "1"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["id"] == two_runs["cur"] and row["n"] == 6 and row["n_passed"] == 2


def test_export_csv(two_runs: dict, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    assert (
        main(
            [
                "--db",
                two_runs["db"],
                "export",
                "--format",
                "csv",
                "--run",
                two_runs["cur"],
                "--output",
                str(out),
            ]
        )
        == 0
    )
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    by_case = {r["case_id"]: r for r in rows}
    assert by_case["a"]["outcome"] == "passed" and by_case["c"]["outcome"] == "failed"
    assert by_case["c"]["output"] == "nope" and by_case["c"]["score.exact_match"] == "0.0"
    assert "expected 'C', got 'nope'" in by_case["c"]["error"]  # a multi-line field survives the round trip
    with open(tmp_path / "r.aggregates.csv", newline="", encoding="utf-8") as f:
        (agg,) = list(csv.DictReader(f))
    assert agg["test"] == "test_evals.py::test_answer" and agg["model"] == "fake"
    assert float(agg["pass_rate"]) == pytest.approx(2 / 6)
    # Counts are integers, not "6.0"; rates and seconds stay decimal.
    assert (agg["n"], agg["passed"], agg["failed"], agg["errors"], agg["cached"]) == ("6", "2", "4", "0", "0")
    assert agg["prompt_tokens"].isdigit() and agg["completion_tokens"] == "6"
    assert "." in agg["latency_p50"] and agg["cost"] == "0.0"


def test_export_json_to_stdout(two_runs: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", two_runs["db"], "export", "--format", "json", "--run", "latest"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "pytest-llmeval-export" and doc["run"]["id"] == two_runs["cur"]
    assert doc["run"]["complete"] == 1 and doc["run"]["models"] == ["fake"]
    assert len(doc["results"]) == 6 and doc["results"][0]["scores"][0]["name"] == "exact_match"
    (agg,) = doc["aggregates"]
    assert agg["metrics"]["pass_rate"] == pytest.approx(2 / 6)
    assert agg["metrics"]["n"] == 6 and isinstance(agg["metrics"]["n"], int)


def test_export_prometheus_textfile(two_runs: dict, tmp_path: Path) -> None:
    out = tmp_path / "llmeval.prom"
    assert main(["--db", two_runs["db"], "export", "--format", "prometheus", "--output", str(out)]) == 0
    families = {f.name: f for f in text_string_to_metric_families(out.read_text())}
    assert {"llmeval_pass_ratio", "llmeval_items", "llmeval_latency_seconds", "llmeval_cost_usd"} <= set(
        families
    )
    assert {"llmeval_score_ratio", "llmeval_tokens", "llmeval_run_complete"} <= set(families)
    samples = [s for f in families.values() for s in f.samples]
    names = {s.name for s in samples}
    assert {"llmeval_items_total", "llmeval_cost_usd_total"} <= names
    (pr,) = families["llmeval_pass_ratio"].samples
    assert pr.labels == {"model": "fake", "task": "test_evals.py::test_answer"}
    assert pr.value == pytest.approx(2 / 6)
    items = {s.labels["outcome"]: s.value for s in families["llmeval_items"].samples}
    assert items == {"passed": 2, "failed": 4, "error": 0, "skipped": 0}
    quantiles = {s.labels["quantile"] for s in families["llmeval_latency_seconds"].samples}
    assert quantiles == {"0.5", "0.95"}
    (score,) = families["llmeval_score_ratio"].samples
    assert score.labels["score"] == "exact_match" and score.value == pytest.approx(2 / 6)
    # Bounded cardinality: only model and task, plus the family's own dimension; never a case id.
    allowed = {"model", "task", "outcome", "quantile", "score", "kind"}
    assert all(set(s.labels) <= allowed for s in samples)
    assert not any(v in ("a", "b", "c") for s in samples for v in s.labels.values())


def test_push_to_a_pushgateway(two_runs: dict, capsys: pytest.CaptureFixture[str]) -> None:
    received: list[tuple[str, str, bytes]] = []

    class Gateway(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_PUT(self) -> None:  # noqa: N802
            received.append(("PUT", self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        assert main(["--db", two_runs["db"], "export", "--format", "prometheus", "--pushgateway", url]) == 0
    finally:
        httpd.shutdown()
        httpd.server_close()
    ((method, path, body),) = received
    assert path == "/metrics/job/llmeval"
    families = {f.name for f in text_string_to_metric_families(body.decode())}
    assert "llmeval_pass_ratio" in families
    # An unreachable gateway: exit status 1 and a message, no traceback.
    assert main(["--db", two_runs["db"], "export", "--format", "prometheus", "--pushgateway", url]) == 1
    assert "push to" in capsys.readouterr().err


def test_compare_shows_changed_cases_and_p_value(two_runs: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            ["--db", two_runs["db"], "compare", "--baseline", two_runs["base"], "--current", two_runs["cur"]]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"baseline: {two_runs['base']}" in out and f"current:  {two_runs['cur']}" in out
    assert "test_evals.py::test_answer [fake]: 6 shared cases" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("pass_rate"))
    assert "1.000" in line and "0.333" in line and "-0.667" in line
    assert "p=0.125 (McNemar)" in line  # 4 discordant pairs, all one way: 2 * 0.5**4
    assert "changed cases (4):" in out
    for c in "cdef":
        assert f"    {c}: passed -> failed" in out
    assert "    a: " not in out

    # Defaults: current = latest, baseline = the run before it; --json for machines.
    assert main(["--db", two_runs["db"], "compare", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["baseline"], doc["current"]) == (two_runs["base"], two_runs["cur"])
    (pair,) = doc["pairs"]
    pass_rate = next(m for m in pair["metrics"] if m["metric"] == "pass_rate")
    assert pass_rate["p_value"] == pytest.approx(0.125) and pass_rate["delta"] == pytest.approx(-4 / 6)
    assert [c["case_id"] for c in pair["changed"]] == ["c", "d", "e", "f"]
    assert any(m["metric"] == "score:exact_match" for m in pair["metrics"])


def test_usage_errors(two_runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", two_runs["db"], "export", "--run", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no run 'nope'" in err and two_runs["cur"] in err and two_runs["base"] in err
    assert main(["--db", str(tmp_path / "none.db"), "runs"]) == 2
    err = capsys.readouterr().err
    assert "no metrics database at" in err and "pytest" in err and "--db" in err
    assert not (tmp_path / "none.db").exists()
    assert main(["export", "--format", "xml"]) == 2
    assert main([]) == 2
    assert main(["--db", two_runs["db"], "compare", "--current", two_runs["base"]]) == 2
    assert "no earlier run" in capsys.readouterr().err
    assert main(["--help"]) == 0


def test_python_m_and_models(two_runs: dict) -> None:
    root = two_runs["root"]
    cli = subprocess.run(
        [sys.executable, "-m", "pytest_llmeval", "models", "--models-file", "models.yaml"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "--list-models", "--models-file", "models.yaml"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    # One line per model (its description, indented further, follows it).
    model_lines = [x.split() for x in cli.stdout.splitlines()[1:] if not x.startswith("   ")]
    # The file's model, with where it is defined, after the built-in ones.
    assert model_lines[-1] == ["fake", "openai", "ready", "[models.yaml:2]"]
    assert {line[-1] for line in model_lines[:-1]} == {"[built-in]"}
    assert "  ".join(model_lines[-1][:3]) in "  ".join(listed.stdout.split())
    runs = subprocess.run(
        [sys.executable, "-m", "pytest_llmeval", "runs"], cwd=root, capture_output=True, text=True
    )
    assert runs.returncode == 0 and two_runs["cur"] in runs.stdout  # default --db data/metrics.db
    bad = subprocess.run(
        [sys.executable, "-m", "pytest_llmeval", "models", "--models-file", "nope.yaml"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "nope.yaml does not exist" in bad.stderr


def test_no_secret_reaches_db_exports_or_spans(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    monkeypatch.setenv("LLMEVAL_CANARY_API_KEY", CANARY)
    monkeypatch.setenv(tracing.CAPTURE_ENV, "true")  # prompts and outputs in spans: still redacted
    exporter = InMemorySpanExporter()
    tracers: list[tracing.Tracer] = []

    def in_memory(cls: type) -> tracing.Tracer:
        tracers.append(tracing.Tracer(exporter, batch=False))
        return tracers[-1]

    monkeypatch.setattr(tracing.Tracer, "from_env", classmethod(in_memory))

    def leaky(prompt: str) -> str:
        return f"my key is Bearer {CANARY} and {CANARY}" if prompt == "leak" else prompt

    with FakeOpenAIServer(answer(leaky)) as srv:
        write_suite(
            pytester.path,
            srv.base_url,
            [("a", "A"), ("echo", CANARY), ("leak", "leak")],
            api_key_env="LLMEVAL_CANARY_API_KEY",
        )
        result = pytester.runpytest(*RUN_ARGS, "--otel", "-o", f"llmeval_judge={CANARY}")
    # Outputs are scrubbed before scoring, so the echoed key no longer matches its case.
    result.assert_outcomes(passed=1, failed=2)
    auth = [v for h in srv.headers for k, v in h.items() if k.lower() == "authorization"]
    assert auth and all(CANARY in a for a in auth)  # the key really was in play

    db = pytester.path / "data" / "metrics.db"
    conn = sqlite3.connect(db)
    out = {r[0]: r[1] for r in conn.execute("SELECT case_id, output FROM results")}
    (command,) = conn.execute("SELECT command FROM runs").fetchone()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert "[REDACTED]" in out["echo"] and "[REDACTED]" in out["leak"]
    assert "llmeval_judge=[REDACTED]" in command

    exports = tmp_path / "exports"
    for fmt, name in (("csv", "r.csv"), ("json", "r.json"), ("prometheus", "r.prom")):
        assert main(["--db", str(db), "export", "--format", fmt, "--output", str(exports / name)]) == 0

    files = [
        p for p in pytester.path.rglob("*") if p.is_file() and p.suffix not in (".py", ".jsonl", ".yaml")
    ]
    files += [p for p in (pytester.path / "data").rglob("*") if p.is_file()]
    files += list(exports.iterdir())
    assert any(p.name == "metrics.db" for p in files) and any(p.name == "results.jsonl" for p in files)
    for p in files:
        assert CANARY.encode() not in p.read_bytes(), f"secret in {p}"

    spans = exporter.get_finished_spans()
    assert {s.name for s in spans} >= {"llmeval.run", "llmeval.item", "chat fake"}
    assert any("gen_ai.output.messages" in s.attributes for s in spans)
    for s in spans:
        assert CANARY not in s.to_json(), f"secret in span {s.name}"


def _llmeval(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_llmeval", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_default_paths_from_a_subfolder(two_runs: dict, tmp_path: Path) -> None:
    """``llmeval`` finds what pytest wrote as pytest would: from the rootdir, whatever the folder."""
    deeper = two_runs["root"] / "sub" / "deeper"
    deeper.mkdir(parents=True)
    runs = _llmeval(deeper, "runs")
    assert runs.returncode == 0, runs.stderr
    assert two_runs["cur"] in runs.stdout and two_runs["base"] in runs.stdout
    page = two_runs["root"] / "data" / "runs" / two_runs["cur"] / f"compare-{two_runs['base']}.html"
    page.unlink(missing_ok=True)
    compare = _llmeval(deeper, "compare")
    assert compare.returncode == 0 and compare.stderr.strip() == f"review page: {page}" and page.is_file()

    # The ini keys of the rootdir's config file move the database and the runs folder.
    proj = tmp_path / "proj"
    (proj / "src" / "pkg").mkdir(parents=True)
    (proj / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.pytest.ini_options]\n'
        'llmeval_metrics_db = "var/evals.db"\nllmeval_runs_dir = "var/runs"\n'
    )
    (proj / "var").mkdir()
    src = sqlite3.connect(two_runs["db"])
    src.backup(dst := sqlite3.connect(proj / "var" / "evals.db"))
    dst.execute("UPDATE runs SET run_dir = NULL")  # as if the run folders were elsewhere
    dst.commit()
    src.close()
    dst.close()
    runs = _llmeval(proj / "src" / "pkg", "runs", "--limit", "1")
    assert runs.returncode == 0 and two_runs["cur"] in runs.stdout, runs.stderr
    compare = _llmeval(proj / "src" / "pkg", "compare", "--no-html")
    assert compare.returncode == 0 and "changed cases (4):" in compare.stdout
    compare = _llmeval(proj / "src", "compare")
    page = proj / "var" / "runs" / f"compare-{two_runs['cur']}-vs-{two_runs['base']}.html"
    assert compare.stderr.strip() == f"review page: {page}" and page.is_file()

    # No database under this rootdir: the message names the path it looked for.
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "pytest.ini").write_text("[pytest]\n")
    none = _llmeval(tmp_path / "empty", "runs")
    assert (
        none.returncode == 2
        and f"no metrics database at {tmp_path / 'empty' / 'data' / 'metrics.db'}" in none.stderr
    )
