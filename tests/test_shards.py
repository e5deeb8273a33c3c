"""Sharded runs: ``--shard K/N`` splits the cases, ``llmeval merge`` joins the shards into one verdict.

The acceptance test runs one suite (150 cases, two models, a loopback OpenAI-wire
server) unsharded and as 3 shards in 3 separate pytest processes, merges them, and
compares what both runs wrote: aggregates, paired model comparisons, gate rows and
verdict must be identical. Both read the same response cache (primed by an earlier
run), so that each case's record, latency included, is the same in both.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _fake_openai import EVAL_TEST, FakeOpenAIServer

from pytest_llmeval.shards import Shard, parse_shard, shard_of

N_CASES = 150
MODELS_YAML = """\
models:
  a:
    type: openai
    model: fake-a
    base_url: {url}
  b:
    type: openai
    model: fake-b
    base_url: {url}
"""
BASE = ["--model", "a,b", "--models-file", "models.yaml", "-p", "no:cacheprovider", "-q"]
GATE = ["--baseline", "baseline.json", "--tolerance", "pass_rate:-0.02"]
XDIST = {2: ["-n", "2"]}  # shard 2 runs on two xdist workers: the controller collects nothing


HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"


def _wrong(model: str, word: str, period: dict[str, int]) -> bool:
    return int(re.match(r"w(\d+)", word).group(1)) % period[model] == 0  # type: ignore[union-attr]


def _responder(period: dict[str, int]) -> Any:
    """Echo the word (a pass) unless the model's period divides the case number (a miss)."""

    def respond(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
        word = str(messages[-1]["content"])
        return "nope" if _wrong(body["model"], word, period) else word

    return respond


OLD = {"fake-a": 5, "fake-b": 9}  # the baseline's answers
NEW = {"fake-a": 6, "fake-b": 3}  # b gets worse: the gate fails on b's pass rate


def write_project(root: Path, url: str, n: int = N_CASES, extra: str = "") -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "models.yaml").write_text(MODELS_YAML.format(url=url))
    words = [f"w{i}" for i in range(n - 1)] + [f"w{n - 1}{HOSTILE}"]  # model output is untrusted text
    lines = [json.dumps({"id": f"case-{i:03d}", "prompt": w, "expected": w}) for i, w in enumerate(words)]
    (root / "cases.jsonl").write_text("\n".join(lines) + "\n" + extra)
    (root / "test_evals.py").write_text(EVAL_TEST)


def pytest_run(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", *BASE, *args],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], expect: tuple[int, ...] = (0, 1)) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode in expect, out[-4000:]
    return out


def llmeval(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_llmeval", *args], cwd=root, capture_output=True, text=True, timeout=300
    )


def summary(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "summary.json").read_text())


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The suite run unsharded and as 3 shards (same cache), and a shard of a changed dataset."""
    root = tmp_path_factory.mktemp("shards")
    with FakeOpenAIServer(_responder(OLD)) as srv:
        write_project(root, srv.base_url)
        finish(pytest_run(root, "--cache", "off", "--save-baseline", "baseline.json", "--output", "runs/old"))
        srv.responder = _responder(NEW)
        finish(pytest_run(root, "--cache", "rw", "--output", "runs/prime"))
        whole = pytest_run(root, "--cache", "ro", *GATE, "--output", "runs/whole")
        shards = [
            pytest_run(
                root, "--cache", "ro", "--shard", f"{k}/3", "--output", f"runs/shard-{k}", *XDIST.get(k, [])
            )
            for k in (1, 2, 3)
        ]
        other = root.parent / (root.name + "-other")
        write_project(
            other, srv.base_url, extra=json.dumps({"id": "case-new", "prompt": "w1", "expected": "w1"}) + "\n"
        )
        shutil.copy(root / "baseline.json", other / "baseline.json")
        other_shard = pytest_run(other, "--cache", "off", "--shard", "3/3", "--output", "runs/shard-3")
        outputs = {
            "whole": finish(whole, (1,)),
            **{f"shard-{k}": finish(p, (0,)) for k, p in enumerate(shards, 1)},
        }
        finish(other_shard, (0,))
        merged = llmeval(
            root, "merge", "runs/shard-1", "runs/shard-2", "runs/shard-3", "--output", "runs/merged", *GATE
        )
    return {"root": root, "other": other, "outputs": outputs, "merged": merged}


@pytest.mark.slow
def test_merged_shards_give_the_unsharded_verdict(sharded: Any) -> None:
    root: Path = sharded["root"]
    merged = sharded["merged"]
    assert merged.returncode == 1, merged.stdout + merged.stderr  # the gate fails on model b, as unsharded
    whole, joined = summary(root / "runs" / "whole"), summary(root / "runs" / "merged")
    shards = [summary(root / "runs" / f"shard-{k}") for k in (1, 2, 3)]

    # Each shard holds a part of the cases, every model of a case in the same shard, none twice.
    counts = [s["run"]["n_results"] for s in shards]
    assert sum(counts) == 2 * N_CASES and all(20 <= c / 2 <= 80 for c in counts), counts
    assert [s["run"]["shard"] for s in shards] == [{"index": k, "count": 3} for k in (1, 2, 3)]
    assert all(s["verdict"] is None for s in shards)
    for k in (1, 2, 3):
        lines = [
            json.loads(x) for x in (root / "runs" / f"shard-{k}" / "results.jsonl").read_text().splitlines()
        ]
        by_case: dict[str, set[str]] = {}
        for rec in lines:
            assert shard_of(rec["test"], rec["case_id"], 3) == k
            by_case.setdefault(rec["case_id"], set()).add(rec["model"])
        assert all(models == {"a", "b"} for models in by_case.values())
        if k not in XDIST:  # under xdist the workers deselect; the controller's final line does not say so
            assert re.search(r"\d+ deselected", sharded["outputs"][f"shard-{k}"])

    # The records are the same cases; every figure computed from them is identical.
    def cases(folder: str) -> list[tuple[str, str, str, str]]:
        lines = (root / "runs" / folder / "results.jsonl").read_text().splitlines()
        return sorted((r["test"], r["model"], r["case_id"], r["outcome"]) for r in map(json.loads, lines))

    assert cases("merged") == cases("whole") and len(cases("whole")) == 2 * N_CASES
    assert joined["aggregates"] == whole["aggregates"]
    assert joined["model_comparisons"] == whole["model_comparisons"]
    assert joined["model_comparisons"][0]["p_value"] < 0.05
    assert joined["verdict"] == whole["verdict"]
    assert joined["verdict"]["passed"] is False
    rows = {(r["model"], r["metric"]): r for r in joined["verdict"]["rows"]}
    assert rows[("b", "pass_rate")]["status"] == "FAIL" and rows[("b", "pass_rate")]["p_value"] < 0.05
    assert rows[("a", "pass_rate")]["ci"] is not None and rows[("a", "pass_rate")]["delta"] != 0
    assert joined["run"]["exit_status"] == whole["run"]["exit_status"] == 1

    # One database run for the merge, naming its shards; each shard's row records its shard.
    conn = sqlite3.connect(root / "data" / "metrics.db")
    conn.row_factory = sqlite3.Row
    run = conn.execute("SELECT * FROM runs WHERE id = ?", (joined["run"]["id"],)).fetchone()
    assert json.loads(run["merged_from"]) == [s["run"]["id"] for s in shards]
    assert run["gate_passed"] == 0 and run["complete"] == 1
    n = conn.execute("SELECT COUNT(*) FROM results WHERE run_id = ?", (run["id"],)).fetchone()[0]
    assert n == 2 * N_CASES
    assert [
        conn.execute("SELECT shard FROM runs WHERE id = ?", (s["run"]["id"],)).fetchone()[0] for s in shards
    ] == [
        "1/3",
        "2/3",
        "3/3",
    ]
    conn.close()
    for s in shards:
        for spec in s["run"]["model_specs"].values():
            assert spec["spec_hash"] and spec["cache_identity"]
        assert s["run"]["datasets"] == whole["run"]["datasets"] != {}
    assert "llmeval gate" in merged.stdout and "gate: FAILED" in merged.stdout
    page = (root / "runs" / "merged" / "report.html").read_text()
    assert "gate FAILED" in page and page.count('class="results-table-row"') == 2 * N_CASES
    assert "<img src=x" not in page and "<script>document" not in page


@pytest.mark.slow
def test_merged_report_in_headless_chromium(sharded: Any, tmp_path: Path) -> None:
    from test_report import CHROMIUM, _Browser

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (install it with: apt-get install -y chromium)")
    report = sharded["root"] / "runs" / "merged" / "report.html"
    with _Browser(tmp_path) as browser:
        page = browser.open(report.as_uri())
        facts = page.eval(PAGE_FACTS)
        assert facts["title"].startswith("LLM eval report") and browser.dialogs == []
        assert facts["injected"] == 0 and HOSTILE in facts["text"]  # shown as text, not run
        assert facts["aggregateRows"] == 2 and facts["gateRows"] >= 2 and facts["comparisonRows"] == 1
        assert facts["rows"] == 2 * N_CASES and facts["badge"] == "gate FAILED"
        # The summary's script runs under the page's Content-Security-Policy: the filters work.
        assert facts["onlyB"] == N_CASES and facts["failedOfB"] == N_CASES // 3


PAGE_FACTS = """
(async () => {
  const q = (s) => document.querySelectorAll(s);
  const visible = () => [...q('#results-table tbody.results-table-row')]
    .filter((tb) => getComputedStyle(tb).display !== 'none').length;
  const choose = async (name, value) => {
    const sel = document.getElementById('llm-filter-' + name);
    sel.value = value;
    sel.dispatchEvent(new Event('change'));
    await new Promise((r) => setTimeout(r, 50));
  };
  const out = {
    title: document.title,
    text: document.body.innerText,
    injected: q('img[src="x"], [onerror]').length,
    aggregateRows: q('#llm-aggregates tr').length - 1,
    gateRows: q('#llm-gate tr').length - 1,
    comparisonRows: q('#llm-model-comparison tr').length - 1,
    rows: q('#results-table tbody.results-table-row').length,
    badge: document.querySelector('.llm-badge').textContent,
  };
  await choose('model', 'b');
  out.onlyB = visible();
  await choose('outcome', 'failed');
  out.failedOfB = visible();
  return out;
})()
"""


@pytest.mark.slow
def test_merge_refuses_a_missing_shard(sharded: Any) -> None:
    out = llmeval(sharded["root"], "merge", "runs/shard-1", "runs/shard-2", "--output", "runs/m2")
    assert out.returncode == 2
    assert "shard 3/3 missing (given: 1/3, 2/3)" in out.stderr
    assert not (sharded["root"] / "runs" / "m2").exists()


@pytest.mark.slow
def test_merge_refuses_shards_of_different_datasets(sharded: Any) -> None:
    root, other = sharded["root"], sharded["other"]
    out = llmeval(root, "merge", "runs/shard-1", "runs/shard-2", str(other / "runs" / "shard-3"))
    assert out.returncode == 2
    assert "the dataset of test_evals.py::test_answer differs" in out.stderr
    assert f"{other / 'runs' / 'shard-3'} (shard 3/3)" in out.stderr


@pytest.mark.slow
def test_merge_refuses_a_duplicated_shard_and_an_unsharded_run(sharded: Any) -> None:
    out = llmeval(sharded["root"], "merge", "runs/shard-1", "runs/shard-1", "runs/shard-2", "runs/whole")
    assert out.returncode == 2
    assert "shard 1/3 is given 2 times" in out.stderr
    assert "runs/whole is not a shard run (pytest was not given --shard K/N)" in out.stderr


def test_shard_values_are_checked() -> None:
    assert parse_shard("2/3") == Shard(2, 3) and str(parse_shard(" 1 / 1 ")) == "1/1"
    for bad, why in (
        ("0/3", "between 1 and 3"),
        ("4/3", "between 1 and 3"),
        ("x", "takes K/N"),
        ("1/0", "at least 1"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_shard(bad)


def test_the_shard_of_a_case_is_its_test_and_id_alone() -> None:
    ids = [f"case-{i:03d}" for i in range(300)]
    first = [shard_of("t.py::test_x", c, 3) for c in ids]
    assert first == [shard_of("t.py::test_x", c, 3) for c in reversed(ids)][::-1]
    assert {1, 2, 3} == set(first) and all(60 <= first.count(k) <= 140 for k in (1, 2, 3))
    assert first != [shard_of("t.py::test_y", c, 3) for c in ids]  # another test splits differently
    assert all(shard_of("t.py::test_x", c, 1) == 1 for c in ids)


def test_bad_shard_and_gate_options_are_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    for bad in ("0/3", "4/3", "x"):
        result = pytester.runpytest("--shard", bad)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*--shard*"])
    result = pytester.runpytest("--shard", "1/2", "--baseline", "b.json", "--save-baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--shard 1/2 with --baseline, --save-baseline*`llmeval merge RUN_DIR...`*"])


def test_shards_report_deselected_items_and_split_plain_tests(
    pytester: pytest.Pytester, fake_openai: Any
) -> None:
    (pytester.path / "models.yaml").write_text(MODELS_YAML.format(url=fake_openai.base_url))
    cases = "".join(
        json.dumps({"id": f"c{i}", "prompt": f"w{i}", "expected": f"w{i}"}) + "\n" for i in range(12)
    )
    (pytester.path / "cases.jsonl").write_text(cases)
    pytester.makepyfile(test_evals=EVAL_TEST + "\n\ndef test_plain():\n    pass\n")
    args = [
        "--model",
        "a,b",
        "--models-file",
        "models.yaml",
        "--cache",
        "off",
        "--no-metrics",
        "-p",
        "no:cacheprovider",
    ]
    ran: list[int] = []
    for k in (1, 2, 3):
        result = pytester.runpytest(*args, "--shard", f"{k}/3", "-k", "not c11")
        outcomes = result.parseoutcomes()
        ran.append(outcomes.get("passed", 0))
        # -k deselects c11's two items in every shard; the shard deselects the rest of the others' items.
        assert outcomes["deselected"] == 25 - outcomes.get("passed", 0)
    assert sum(ran) == 2 * 11 + 1  # every item in exactly one shard, the plain test included


def test_a_shard_that_gets_no_case_still_records_its_run(pytester: pytest.Pytester, fake_openai: Any) -> None:
    """With fewer cases than shards some shards run nothing: they exit 0 and leave a folder to merge."""
    from pytest_llmeval import cli

    (pytester.path / "models.yaml").write_text(MODELS_YAML.format(url=fake_openai.base_url))
    (pytester.path / "cases.jsonl").write_text(
        json.dumps({"id": "only", "prompt": "w1", "expected": "w1"}) + "\n"
    )
    pytester.makepyfile(test_evals=EVAL_TEST)
    # The models come from the ini key here: a shard's run row is written before they are loaded.
    pytester.makeini("[pytest]\nllmeval_model = a,b\nllmeval_models_file = models.yaml\n")
    args = ["--cache", "off", "-p", "no:cacheprovider"]
    for k in (1, 2, 3):
        result = pytester.runpytest(*args, "--shard", f"{k}/3", "--output", f"runs/s{k}")
        assert result.ret == 0
        run = summary(pytester.path / "runs" / f"s{k}")["run"]
        assert run["shard"] == {"index": k, "count": 3} and run["datasets"]
        assert all(run["model_specs"][m]["cache_identity"] for m in ("a", "b"))
    counts = [summary(pytester.path / "runs" / f"s{k}")["run"]["n_results"] for k in (1, 2, 3)]
    assert sorted(counts) == [0, 0, 2]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(pytester.path)
        assert cli.main(["merge", "runs/s1", "runs/s2", "runs/s3", "--output", "runs/m"]) == 0
    merged = summary(pytester.path / "runs" / "m")
    assert merged["run"]["n_results"] == 2 and [a["pass_rate"] for a in merged["aggregates"]] == [1.0, 1.0]
