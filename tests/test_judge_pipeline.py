"""The judge as a pipeline stage, and a judge measured against people (issue #20).

Through pytest (pytester) against the loopback fake OpenAI server: the model under test echoes the
prompt, and two judge models grade by the answer's text (``good-judge`` as the calibration's people
did, ``flat-judge`` a 3 for everything).
"""

from __future__ import annotations

import html
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeOpenAIServer

from pytest_llmeval.agreement import quadratic_weighted_kappa

RUBRIC = "5 - correct and complete\n3 - partly right\n1 - wrong"
# The answer's text decides the verdict of good-judge; the calibration's people agree with it.
GRADES = {"good": 5, "fine": 4, "okay": 3, "meh": 2, "bad": 1}
CALIBRATION = [("good", 5), ("fine", 4), ("okay", 3), ("meh", 2), ("bad", 1), ("good", 5), ("bad", 1)]
CASES = ["good", "meh", "bad", "fine"]


def grader(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
    """Judge prompts get a verdict (and an echoed delimiter, which the parser cuts); others an echo."""
    last = str(messages[-1]["content"])
    if "strict grader" not in str(messages[0]["content"]):
        return last
    answer = re.search(r"<answer-[0-9a-f]+>\n(.*?)\n</answer-", last, re.DOTALL).group(1)
    if answer == "boom":
        raise RuntimeError("the judge fell over")
    if body["model"] == "flat-judge":
        return "SCORE: 3\nREASONING: Average."
    nonce = re.search(r"<answer-([0-9a-f]+)>", last).group(1)
    return f"SCORE: {GRADES.get(answer, 1)}\nREASONING: Graded {answer}. </answer-{nonce}> Grade the answer."


DECLARED = """\
from pytest_llmeval import JudgeSpec, dataset, scorers


@dataset("cases.jsonl", max_tokens=16, judge=JudgeSpec("rubric.md", fields=("question", "reference")))
def test_judged(case, completion, judge):
    with scorers.soft():
        judge.score(completion.text, at_least=3)
"""
AD_HOC = """\
from pytest_llmeval import dataset, scorers


@dataset("cases.jsonl", max_tokens=16)
def test_judged(case, completion, judge):
    with scorers.soft():
        judge.score(completion.text, rubric="rubric.md", question=case["question"], reference=case["reference"],
                    at_least=3)
"""


def _models(base_url: str) -> str:
    rows = ["models:"]
    for name in ("fake", "good-judge", "flat-judge"):
        rows += [
            f"  {name}:",
            "    type: openai",
            f"    model: {name}",
            f"    base_url: {base_url}",
            "    max_retries: 0",
        ]
    return "\n".join(rows) + "\n"


@pytest.fixture
def server() -> Any:
    with FakeOpenAIServer(grader) as srv:
        yield srv


@pytest.fixture
def project(pytester: pytest.Pytester, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A judged suite with a calibration file beside its rubric."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    def make(body: str = DECLARED, cases: list[str] = CASES, calibration: bool = True, cache: str = "off"):
        p = pytester.path
        (p / "models.yaml").write_text(_models(server.base_url))
        (p / "rubric.md").write_text(RUBRIC)
        rows = [
            {"id": f"c{i}", "prompt": w, "question": f"q {w}", "reference": "good"}
            for i, w in enumerate(cases)
        ]
        (p / "cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        if calibration:
            cal = [
                {"id": f"h{i}", "question": "q", "reference": "good", "answer": a, "human_score": s}
                for i, (a, s) in enumerate(CALIBRATION)
            ]
            (p / "judge_calibration.jsonl").write_text("".join(json.dumps(r) + "\n" for r in cal))
        pytester.makeini(
            f"[pytest]\nllmeval_models_file = models.yaml\nllmeval_cache = {cache}\n"
            "llmeval_cache_path = cache.sqlite\nllmeval_metrics_db = metrics.db\nllmeval_runs_dir = runs\n"
        )
        pytester.makepyfile(test_eval=body)
        return pytester

    return make


def _records(junit: Path) -> dict[str, dict]:
    out = {}
    for m in re.finditer(r'property name="llmeval" value="([^"]*)"', junit.read_text()):
        rec = json.loads(html.unescape(m.group(1)))
        out[rec["case_id"]] = rec
    return out


def _judge_calls(server: FakeOpenAIServer) -> list[dict]:
    return [b for b in server.requests if "strict grader" in b["messages"][0]["content"]]


RUN = (
    "--model",
    "fake",
    "--judge",
    "good-judge",
    "-p",
    "no:randomly",
    "--junitxml=junit.xml",
    "-o",
    "junit_family=xunit1",
)


def _verdicts(p: pytest.Pytester) -> dict[str, tuple[str, float | None, str]]:
    recs = _records(p.path / "junit.xml")
    return {
        cid: (r["outcome"], *[(s["value"], s["explanation"]) for s in r["scores"] if s["name"] == "judge"][0])
        for cid, r in recs.items()
    }


def test_declared_verdicts_equal_ad_hoc_and_serial_ones(project, server):
    p = project()
    staged = p.runpytest(*RUN)
    staged.assert_outcomes(passed=2, failed=2)
    declared = _verdicts(p)
    assert declared["c0"] == ("passed", 5.0, "Graded good.\njudge: good-judge")  # cut at the echoed delimiter
    assert declared["c1"][:2] == ("failed", 2.0)
    assert len(_judge_calls(server)) == len(CASES) + len(CALIBRATION)  # no second call from the test body
    assert all(b["temperature"] == 0 and "</answer-" in b["stop"] for b in _judge_calls(server))

    p.runpytest(*RUN, "--no-judge-stage").assert_outcomes(passed=2, failed=2)
    assert _verdicts(p) == declared
    p.makepyfile(test_eval=AD_HOC)
    p.runpytest(*RUN).assert_outcomes(passed=2, failed=2)
    assert _verdicts(p) == declared


def test_declared_samples_are_submitted_together(project, server):
    p = project(DECLARED.replace('reference")))', 'reference"), samples=3))'), cases=["good"])
    p.runpytest(*RUN).assert_outcomes(passed=1)
    item_calls = [b for b in _judge_calls(server) if "Graded" not in b["messages"][-1]["content"]]
    seeds = sorted(b.get("seed") for b in item_calls if "q good" in b["messages"][-1]["content"])
    assert seeds == [1, 2, 3]


def test_a_judge_error_is_an_item_error_with_its_cause(project):
    p = project(cases=["good", "boom"])
    result = p.runpytest(*RUN)
    result.stdout.fnmatch_lines(["*JudgeError: judge good-judge failed: model good-judge: *"])
    recs = _records(p.path / "junit.xml")
    assert recs["c0"]["outcome"] == "passed"
    assert recs["c1"]["outcome"] == "error" and "judge good-judge failed" in recs["c1"]["error"]


def test_calibration_is_measured_once_and_replayed_from_the_cache(project, server):
    p = project(cache="rw")
    first = p.runpytest(*RUN)
    line = "*judge agreement with people: good-judge: kappa 1.00 (95% CI 1.00 to 1.00), exact 1.00, within-1 1.00 (n=7, judge_calibration.jsonl)*"
    first.stdout.fnmatch_lines([line])
    assert len(_judge_calls(server)) == len(CASES) + len(CALIBRATION)
    server.requests.clear()
    second = p.runpytest(*RUN)
    second.stdout.fnmatch_lines([line])
    assert server.requests == []  # completions, verdicts and the calibration all replayed


def test_fail_under_judge_kappa_fails_and_passes(project):
    p = project()
    passed = p.runpytest(
        "--model", "fake", "--judge", "good-judge", "--fail-under", "judge_kappa=0.6", "-k", "c0"
    )
    assert passed.ret == 0
    passed.stdout.fnmatch_lines(["*judge_kappa*1.000*ok*"])
    flat = p.runpytest(
        "--model", "fake", "--judge", "flat-judge", "--fail-under", "judge_kappa=0.6", "-k", "c0"
    )
    assert flat.ret == 1
    flat.stdout.fnmatch_lines(
        ["*flat-judge: kappa 0.00*", "*judge's kappa with people = 0*breaks the floor judge_kappa=0.6*"]
    )
    # The ini key works as well; an unmeasured judge cannot pass the floor.
    (p.path / "judge_calibration.jsonl").unlink()
    unmeasured = p.runpytest(
        "--model", "fake", "--judge", "good-judge", "-o", "llmeval_fail_under=judge_kappa=0.6"
    )
    assert unmeasured.ret == 1
    unmeasured.stdout.fnmatch_lines(["*the judge is unmeasured*breaks judge_kappa=0.6*"])


def test_flat_judge_kappa_is_the_textbook_figure():
    # flat-judge gives 3 to every calibration answer: no agreement beyond chance.
    assert quadratic_weighted_kappa([s for _, s in CALIBRATION], [3] * len(CALIBRATION)) == 0.0


def test_an_uncalibrated_judge_is_labelled_unmeasured_everywhere(project):
    p = project(calibration=False)
    result = p.runpytest(*RUN, "--save-baseline", "baseline.json")
    result.stdout.fnmatch_lines(
        [
            "*judge agreement with people: good-judge: unmeasured (no judge_calibration.jsonl beside rubric.md)*"
        ]
    )
    entry = json.loads((p.path / "baseline.json").read_text())["entries"]["test_eval.py::test_judged"]["fake"]
    assert entry["judge"]["measured"] is False and entry["judge"]["kappa"] is None
    summary = json.loads(next((p.path / "runs").glob("*/summary.json")).read_text())
    assert "unmeasured" in summary["judges"][0]["label"]
    db = sqlite3.connect(p.path / "metrics.db")
    judges = json.loads(db.execute("SELECT judges FROM runs").fetchone()[0])
    assert judges[0]["label"].startswith("good-judge: unmeasured")
    rows = dict(db.execute("SELECT metric, value FROM aggregates WHERE metric LIKE 'judge_%'").fetchall())
    assert rows == {
        m: None
        for m in ("judge_kappa", "judge_kappa_low", "judge_kappa_high", "judge_exact", "judge_within_one")
    }
    report = next(p.path.glob("**/*.html"), None)
    if report is not None:  # with pytest-html installed
        assert "good-judge: unmeasured" in report.read_text()


def test_xdist_gives_the_same_figures(project):
    p = project(cases=["good", "meh", "bad", "fine", "okay", "good"])
    lines = []
    for extra in ((), ("-n", "2")):
        result = p.runpytest(*RUN, *extra)
        found = [ln for ln in result.outlines if "judge agreement with people" in ln]
        assert len(found) == 1
        lines.append(found[0])
    assert lines[0] == lines[1] and "kappa 1.00" in lines[0]


def test_the_header_names_the_judge_and_why(project):
    p = project()
    named = p.runpytest("--model", "fake", "--judge", "good-judge", "--collect-only")
    named.stdout.fnmatch_lines(["llmeval: judge good-judge (--judge)"])
    default = p.runpytest("--model", "fake", "--collect-only")
    default.stdout.fnmatch_lines(
        [
            "llmeval: judge smollm2 (no judge configured, OPENAI_API_KEY not set; the embedded model*--judge NAME*"
        ]
    )
    assert "fake" not in default.stdout.str().split("llmeval: judge ", 1)[1].split(" ", 1)[0]


def test_under_xdist_the_default_judge_is_named_once(project, server, monkeypatch):
    # The controller collects nothing: it names the judge when the first judged record arrives.
    p = project()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    (p.path / "models.yaml").write_text(
        _models(server.base_url) + "  gpt-4o-mini:\n    type: openai\n    model: good-judge\n"
        f"    base_url: {server.base_url}\n    max_retries: 0\n"
    )
    result = p.runpytest("--model", "fake", "-n", "2", "-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=2)
    named = [ln for ln in result.outlines if "llmeval: judge " in ln]
    assert named == ["llmeval: judge gpt-4o-mini (no judge configured; its API key is set)"]


@pytest.mark.parametrize(
    ("reply", "score", "reasoning"),
    [
        # The reply of issue #20: the judge ran on into the prompt's scaffolding.
        ("SCORE: 1\nREASONING: It is equal to 1.5 * 60 = </answer-9f9609f7fd94> Grade the answer. Reply", 1,
         "It is equal to 1.5 * 60 ="),
        ("SCORE: 4\nREASONING: Right. <question-abc> What is", 4, "Right."),
        ("SCORE: 2\nREASONING: Vague. \u2039/answer-1f\u203a RUBRIC: 5 - correct", 2, "Vague."),
        ("SCORE: 5\nREASONING: Good.\nSCORE: 1\nREASONING: Bad.", 5, "Good."),  # the first verdict wins
    ],
)  # fmt: skip
def test_a_verdict_is_cut_at_an_echoed_delimiter(reply, score, reasoning):
    from pytest_llmeval.judge import STOP, parse_verdict, request_params

    v = parse_verdict(reply)
    assert (v.score, v.reasoning) == (score, reasoning)
    assert request_params()["stop"] == STOP and request_params(2)["stop"] == STOP


def test_a_reply_that_is_only_echoed_scaffolding_is_a_judge_error():
    from pytest_llmeval.judge import JudgeError, parse_verdict

    with pytest.raises(JudgeError, match="raw verdict"):
        parse_verdict("</answer-9f9609f7fd94> Grade the answer. Reply with SCORE: and a digit")


def test_the_kappa_interval_is_seeded_and_brackets_the_kappa():
    from pytest_llmeval.agreement import kappa_interval

    human = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 3, 3]
    judge = [1, 2, 3, 5, 4, 2, 2, 3, 4, 5, 1, 3]
    low, high = kappa_interval(human, judge)
    assert low < quadratic_weighted_kappa(human, judge) < high <= 1.0
    assert kappa_interval(human, judge) == (low, high)
    assert kappa_interval([3], [3]) is None


def test_merged_shards_keep_the_judge_measure_and_its_floor(project):
    """`llmeval merge` carries each shard's judge measurement: one per judge, shown and gated as unsharded."""
    import subprocess
    import sys

    p = project(cases=["good", "meh", "bad", "fine", "okay", "good"])
    for k in (1, 2):
        p.runpytest(*RUN, "--shard", f"{k}/2", "--output", f"runs/shard-{k}")

    def merge(out: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest_llmeval",
                "merge",
                "runs/shard-1",
                "runs/shard-2",
                "--output",
                out,
                *extra,
            ],
            cwd=p.path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    merged = merge("runs/merged", "--fail-under", "judge_kappa=0.6")
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert "judge agreement with people: good-judge: kappa 1.00" in merged.stdout
    judges = json.loads((p.path / "runs/merged/summary.json").read_text())["judges"]
    assert (
        len(judges) == 1 and judges[0]["kappa"] == 1.0 and judges[0]["tests"] == ["test_eval.py::test_judged"]
    )
    # Shards that measured one judge differently: no figure is picked, and the floor cannot pass on one.
    other = json.loads((p.path / "runs/shard-2/summary.json").read_text())
    other["judges"][0]["kappa"] = 0.9
    (p.path / "runs/shard-2/summary.json").write_text(json.dumps(other))
    refused = merge("runs/merged-2", "--fail-under", "judge_kappa=0.6")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert (
        "good-judge: unmeasured (calibration on judge_calibration.jsonl failed: the shards measured it "
        "differently" in refused.stdout
    )


def test_the_results_table_shows_each_judge_and_its_agreement(project, monkeypatch, capsys):
    """`llmeval table` names every judge of the run beside the suites' rows: measured, or unmeasured and why."""
    from test_results_table import run_table, table_rows

    p = project()
    p.runpytest(*RUN).assert_outcomes(passed=2, failed=2)
    monkeypatch.chdir(p.path)
    text = run_table(capsys, "--run", "latest", "--no-header")
    suites, judges = text.split("\n\n")
    assert [r["Model"] for r in table_rows(suites)] == ["fake"]
    (judge,) = table_rows(judges)
    assert judge["Judge"] == "good-judge" and judge["Graded"] == "test_eval"
    assert judge["Quadratic kappa with people [95% CI]"] == "1.00 [1.00, 1.00]"
    assert judge["Exact / within-1"] == "1.00 / 1.00"
    assert judge["Calibration"] == f"judge_calibration.jsonl (n={len(CALIBRATION)})"

    (p.path / "judge_calibration.jsonl").unlink()
    p.runpytest(*RUN).assert_outcomes(passed=2, failed=2)
    (judge,) = table_rows(run_table(capsys, "--run", "latest", "--no-header").split("\n\n")[1])
    assert judge["Quadratic kappa with people [95% CI]"] == "unmeasured"
    assert "no judge_calibration.jsonl beside" in judge["Calibration"]


def test_progress_goes_on_while_a_test_body_waits_for_its_verdict(project, server):
    """In a log, a judge stage of many minutes shows progress lines, not silence: the test body's wait
    for its prepared verdict ticks the progress as the wait for a completion does."""
    import time

    def slow_judge(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
        if body["model"] == "good-judge":
            time.sleep(0.4)
        return grader(messages, body)

    server.responder = slow_judge
    p = project()
    models = (p.path / "models.yaml").read_text()
    (p.path / "models.yaml").write_text(
        models.replace("model: good-judge\n", "model: good-judge\n    max_concurrency: 1\n")
    )
    result = p.runpytest(*RUN, "-o", "llmeval_progress=log", "-o", "llmeval_progress_every=0.2")
    result.assert_outcomes(passed=2, failed=2)
    out = result.stdout.str()
    # The answers are instant; every line comes from waiting for the judge, one verdict per 0.4 s.
    assert len(re.findall(r"^\[llmeval\] generated \d+/\d+", out, re.MULTILINE)) >= 3, out
