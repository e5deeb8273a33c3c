"""Faults, crashes, bad input, secrets and hostile outputs (docs/guarantees.md lists what each proves)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import FakeOpenAIServer, models_yaml

from pytest_llmeval import gate

TEST_FILE = (
    "from pytest_llmeval import dataset, scorers\n\n"
    "@dataset('cases.jsonl', max_tokens=16)\n"
    "def test_x(case, completion):\n"
    "    scorers.exact_match(completion.text, case['expected'])\n"
)


def _project(pytester: pytest.Pytester, base_url: str, n: int, **model: object) -> pytest.Pytester:
    pytester.makefile(".yaml", models=models_yaml(base_url, **model))
    rows = [
        json.dumps({"id": f"c{i:03d}", "prompt": f"answer {i}", "expected": f"answer {i}"}) for i in range(n)
    ]
    pytester.path.joinpath("cases.jsonl").write_text("\n".join(rows) + "\n")
    pytester.makeini(
        "[pytest]\nllmeval_models_file = models.yaml\nllmeval_cache_path = cache.sqlite\n"
        "llmeval_metrics_db = metrics.db\nllmeval_runs_dir = runs\n"
    )
    pytester.makepyfile(test_eval=TEST_FILE)
    return pytester


def _db_rows(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.slow
def test_fault_storm_loses_and_duplicates_nothing(pytester):
    """150 cases, 30% of requests answered with 429/500/503/slow/reset/truncated."""
    with FakeOpenAIServer(fault_rate=0.3, retry_after=0.05, slow_seconds=2.5, seed=7) as srv:
        p = _project(pytester, srv.base_url, 150, timeout=1.0, max_retries=1, max_concurrency=16)
        r = p.runpytest(
            "--model", "fake", "--cache", "off", "--fail-under", "pass_rate=0.0", "-p", "no:randomly"
        )
        outcomes = r.parseoutcomes()
        injected = dict(srv.injected)
    passed, failed, errors = outcomes.get("passed", 0), outcomes.get("failed", 0), outcomes.get("errors", 0)
    assert passed + failed + errors == 150
    assert sum(injected.values()) >= 30 and len(injected) == 6, injected
    assert errors > 0  # with one retry some items exhaust their attempts
    # Every error names its cause.
    err_lines = [ln for ln in r.stdout.lines if ln.startswith("ERROR test_eval.py")]
    assert len(err_lines) == errors
    assert all("model fake:" in ln for ln in err_lines), err_lines[:3]
    # The database has each item exactly once, and counts the retries.
    rows = _db_rows(p.path / "metrics.db", "SELECT nodeid, outcome, retries FROM results")
    assert len(rows) == 150 and len({n for n, _, _ in rows}) == 150
    assert sum(1 for _, o, _ in rows if o == "error") == errors
    retries = sum(rt for _, _, rt in rows)
    assert retries > 0
    r.stdout.fnmatch_lines([f"*retries {retries}*"])
    # So does the run folder's JSONL.
    (run_dir,) = list((p.path / "runs").iterdir())
    ids = [json.loads(ln)["nodeid"] for ln in (run_dir / "results.jsonl").read_text().splitlines()]
    assert len(ids) == 150 and len(set(ids)) == 150
    # The gate refuses a run with errors.
    assert r.ret == 1
    r.stdout.fnmatch_lines(["*gate: FAILED: *item(s) errored; missing data cannot pass the gate*"])
    print(
        f"faults injected {injected}, items 150, passed {passed}, failed {failed}, errors {errors}, "
        f"retries {retries}, lost 0, duplicated 0"
    )


@pytest.mark.slow
def test_sigkill_during_generation_leaves_usable_database_and_cache(pytester):
    with FakeOpenAIServer(delay=0.3) as srv:
        p = _project(pytester, srv.base_url, 60, max_concurrency=2)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "--model", "fake", "-p", "no:cacheprovider"],
            cwd=p.path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and srv.completed < 12:
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for db in ("metrics.db", "cache.sqlite"):
            assert _db_rows(p.path / db, "PRAGMA integrity_check") == [("ok",)]
        runs = _db_rows(p.path / "metrics.db", "SELECT complete FROM runs")
        assert runs == [(0,)]
        cached = _db_rows(p.path / "cache.sqlite", "SELECT count(*) FROM responses")[0][0]
        assert cached > 0
        # The next run works and replays what the killed one had already paid for.
        r = p.runpytest("--model", "fake")
        r.assert_outcomes(passed=60)
        r.stdout.fnmatch_lines([f"*({cached}/60 cached)*"])
        assert _db_rows(p.path / "metrics.db", "SELECT complete FROM runs ORDER BY started") == [(0,), (1,)]


@pytest.mark.slow
def test_sigkill_during_baseline_save_leaves_old_or_new_file(tmp_path):
    target = tmp_path / "baseline.json"
    old = {"format": "pytest-llmeval-baseline", "version": 1, "entries": {"old": {}}}
    gate.write_json_atomic(target, old)
    new_cases = {f"c{i:06d}": {"passed": True, "score": 1.0, "latency": 0.1} for i in range(200_000)}
    code = (
        "import json, sys\nfrom pytest_llmeval.gate import write_json_atomic\n"
        f"cases = {{f'c{{i:06d}}': {{'passed': True, 'score': 1.0, 'latency': 0.1}} for i in range(200_000)}}\n"
        "data = {'format': 'pytest-llmeval-baseline', 'version': 1, 'entries': {'new': {'m': {'cases': cases}}}}\n"
        "print('ready', flush=True)\n"
        f"write_json_atomic({str(target)!r}, data)\n"
    )
    seen = set()
    for delay in (0.0, 0.05, 0.1, 0.2, 0.4, 0.8):
        gate.write_json_atomic(target, old)
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = gate.load_baseline(target)  # parses: never partial
        seen.add(next(iter(data["entries"])))
        if "new" in data["entries"]:
            assert len(data["entries"]["new"]["m"]["cases"]) == len(new_cases)
    assert "old" in seen


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{"id": "a", "prompt": "x"}\n'
            + b'{"id": "b", "prompt": "'
            + b"y" * (10 * 1024 * 1024)
            + b'"}\n',
            "*cases.jsonl:2: line is 104857* bytes, over the 4194304 byte limit*",
        ),
        (b'{"id": "a", "prompt": "\xff\xfe"}\n', "*cases.jsonl:1: not valid UTF-8*"),
        (b'{"id": "a", "tags": [1], "prompt": "x"}\n', "*cases.jsonl:1: 'tags' must be a list of strings*"),
        (b'{"id": "a b", "prompt": "x"}\n', "*cases.jsonl:1: id 'a b' may only contain*"),
    ],
)
def test_bad_dataset_lines_name_file_and_line(pytester, fake_openai, content, message):
    p = _project(pytester, fake_openai.base_url, 1)
    p.path.joinpath("cases.jsonl").write_bytes(content)
    r = p.runpytest("--model", "fake")
    r.stdout.fnmatch_lines([message])
    assert "Traceback" not in r.stdout.str()


CANARY = "sk-canary-0f1e2d3c4b5a69788796a5b4c3d2e1f0"


@pytest.mark.slow
def test_canary_key_appears_nowhere(pytester, monkeypatch):
    monkeypatch.setenv("CANARY_API_KEY", CANARY)

    def leaky(messages, body):  # a model that repeats secrets it should never have seen
        return f"the key is {CANARY} and Authorization: Bearer {CANARY}"

    with FakeOpenAIServer(leaky) as srv:
        p = _project(pytester, srv.base_url, 3, api_key_env="CANARY_API_KEY")
        r = p.runpytest_subprocess(
            "--model",
            "fake",
            "--junitxml=junit.xml",
            "-o",
            "junit_family=xunit1",
            "--log-level=DEBUG",
            "-rA",
            "--output",
            "run",
        )
        sent = [h.get("Authorization") or h.get("authorization") for h in srv.headers]
    assert sent and all(s == f"Bearer {CANARY}" for s in sent)  # the key did reach the server
    r.assert_outcomes(failed=3)
    texts = {"stdout": r.stdout.str(), "stderr": r.stderr.str()}
    for f in [
        p.path / "junit.xml",
        *(p.path / "run").rglob("*"),
        p.path / "metrics.db",
        p.path / "cache.sqlite",
    ]:
        if f.is_file():
            texts[str(f)] = f.read_bytes().decode("utf-8", "replace")
    for wal in p.path.glob("*-wal"):
        texts[str(wal)] = wal.read_bytes().decode("utf-8", "replace")
    for where, text in texts.items():
        assert CANARY not in text, where
        assert "Bearer sk-" not in text, where
    assert "[REDACTED]" in texts["stdout"]


def test_ansi_escapes_in_outputs_cannot_drive_the_terminal(pytester):
    def hostile(messages, body):
        return "\x1b[2J\x1b[H\x1b]0;owned\x07 all tests passed \x1b[32m"

    with FakeOpenAIServer(hostile) as srv:
        p = _project(pytester, srv.base_url, 2)
        r = p.runpytest("--model", "fake", "--cache", "off")
    r.assert_outcomes(failed=2)
    out = r.stdout.str()
    assert "\x1b[2J" not in out and "\x1b]0;" not in out
    assert "\\x1b[2J" in out  # shown, made visible


def test_huge_and_invalid_utf8_outputs_are_handled(pytester):
    def big(messages, body):
        last = messages[-1]["content"]
        if last.endswith("0"):
            return "x" * 1_000_000
        return "\x00raw:broken"

    with FakeOpenAIServer(big) as srv:
        p = _project(pytester, srv.base_url, 2, max_retries=0)
        r = p.runpytest("--model", "fake", "--cache", "off", "-p", "no:randomly")
    # c000: a 1 MB answer, scored and shown shortened; c001: invalid UTF-8, an error with its cause.
    r.assert_outcomes(failed=1, errors=1)
    r.stdout.fnmatch_lines(["*exact_match = 0.000*got 'xxxx*...*"])
    r.stdout.fnmatch_lines(["*model fake: *Error*"])
    assert len(r.stdout.str()) < 200_000
