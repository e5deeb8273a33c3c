"""The baseline gate: save, compare, statistics, exit status and the final line."""

from __future__ import annotations

import json

import pytest

from pytest_llmeval import gate

BACKEND = '''
import os
from pytest_llmeval.backends.base import Backend, Completion


class Scripted(Backend):
    """Answers "ok", or "bad" for the case ids in $WRONG; latency from $LAT."""

    mode = "batch"

    def generate_batch(self, requests, cancelled=None):
        wrong = set(filter(None, os.environ.get("WRONG", "").split(",")))
        out = []
        for r in requests:
            cid = r.message_list[-1]["content"]
            out.append(Completion(text="bad" if cid in wrong else "ok", latency_s=float(os.environ.get("LAT", "0.01")),
                                  prompt_tokens=10, completion_tokens=2, cost=self.spec.cost(10, 2)))
        return out


def pytest_llmeval_register_backends():
    return {"scripted": Scripted}
'''


@pytest.fixture
def gated(pytester, monkeypatch):
    def make(n: int, price: float = 0.0):
        pytester.makeconftest(BACKEND)
        pytester.makefile(
            ".yaml",
            models=f"models:\n  m:\n    type: scripted\n    cost_per_1k_prompt: {price}\n"
            "  other:\n    type: scripted\n",
        )
        rows = [json.dumps({"id": f"c{i:03d}", "prompt": f"c{i:03d}"}) for i in range(n)]
        pytester.path.joinpath("cases.jsonl").write_text("\n".join(rows) + "\n")
        pytester.makeini(
            "[pytest]\nllmeval_models_file = models.yaml\nllmeval_cache = off\n"
            "llmeval_metrics_db = metrics.db\nllmeval_runs_dir = runs\n"
        )
        pytester.makepyfile(
            test_eval=(
                "from pytest_llmeval import dataset, scorers\n\n"
                "@dataset('cases.jsonl')\n"
                "def test_g(case, completion):\n"
                "    scorers.exact_match(completion.text, 'ok')\n"
            )
        )
        return pytester

    def run(p, wrong=(), lat=0.01, *args):
        monkeypatch.setenv("WRONG", ",".join(f"c{i:03d}" for i in wrong))
        monkeypatch.setenv("LAT", str(lat))
        return p.runpytest("--model", "m", *args)

    make.run = run
    return make


def _save(gated, p, wrong=(), lat=0.01):
    r = gated.run(p, wrong, lat, "--save-baseline", "baseline.json")
    r.stdout.fnmatch_lines(["*baseline saved: *baseline.json*"])
    return json.loads(p.path.joinpath("baseline.json").read_text())


def test_baseline_file_format(gated):
    p = gated(6)
    data = _save(gated, p, wrong=(1,))
    assert data["format"] == "pytest-llmeval-baseline" and data["version"] == 1
    assert set(data["metadata"]) >= {"created", "git_commit", "plugin_version"}
    entry = data["entries"]["test_eval.py::test_g"]["m"]
    assert entry["n"] == 6 and entry["pass_rate"] == pytest.approx(5 / 6)
    assert entry["cases"]["c001"] == {"passed": False, "score": 0.0, "latency": 0.01}
    assert entry["dataset_hash"] and entry["model_spec_hash"]
    text = p.path.joinpath("baseline.json").read_text()
    assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"  # stable order


def test_improvement_passes(gated):
    p = gated(40)
    _save(gated, p, wrong=range(10))
    r = gated.run(p, (), 0.01, "--baseline", "baseline.json")
    assert r.ret == 0
    r.stdout.fnmatch_lines(["*pass_rate*0.750*1.000*+0.250*within pass_rate:+0*", "*gate: PASSED*"])


def test_regression_fails_with_exit_code_1_and_the_final_line_agrees(gated):
    p = gated(40)
    _save(gated, p)
    r = gated.run(p, range(15), 0.01, "--baseline", "baseline.json")
    assert r.ret == 1
    r.stdout.fnmatch_lines(["*pass_rate*1.000*0.625*-0.375*p=6.1e-05*FAIL (tolerance pass_rate:+0, significant*"])
    r.stdout.fnmatch_lines(["*gate: FAILED: test_eval.py::test_g [[]m[]]: pass_rate 1.000 -> 0.625*"])
    assert "1 gate failed" in r.stdout.lines[-1]


def test_case_failures_with_a_passing_gate_exit_zero(gated):
    p = gated(20)
    _save(gated, p, wrong=(1, 2))
    r = gated.run(p, (1, 2), 0.01, "--baseline", "baseline.json")
    assert r.ret == 0
    last = r.stdout.lines[-1]
    assert "2 failed" in last and "1 gate passed" in last


def test_noise_within_tolerance_passes(gated):
    p = gated(40)
    _save(gated, p)
    r = gated.run(p, (3,), 0.01, "--baseline", "baseline.json", "--tolerance", "pass_rate:-0.05", "--gate-mode", "strict")
    assert r.ret == 0
    r.stdout.fnmatch_lines(["*within pass_rate:-0.05*"])


def test_same_drop_is_significant_on_large_n_only(gated):
    small = gated(10)
    _save(gated, small)
    r = gated.run(small, (0, 1), 0.01, "--baseline", "baseline.json", "--tolerance", "pass_rate:-0.05")
    assert r.ret == 0  # 20 points down on 10 cases: p = 0.5
    r.stdout.fnmatch_lines(["*beyond tolerance pass_rate:-0.05 but not significant (p=0.5)*"])
    r = gated.run(small, (0, 1), 0.01, "--baseline", "baseline.json", "--tolerance", "pass_rate:-0.05",
                  "--gate-mode", "strict")
    assert r.ret == 1  # strict mode: the tolerance alone
    big = gated(60)
    _save(gated, big)
    r = gated.run(big, range(12), 0.01, "--baseline", "baseline.json", "--tolerance", "pass_rate:-0.05")
    assert r.ret == 1  # 20 points down on 60 cases: p < 0.001


def test_latency_gate(gated):
    p = gated(20)
    _save(gated, p, lat=0.1)
    ok = gated.run(p, (), 0.11, "--baseline", "baseline.json", "--tolerance", "latency_p95:+25%")
    assert ok.ret == 0
    bad = gated.run(p, (), 0.2, "--baseline", "baseline.json", "--tolerance", "latency_p95:+25%")
    assert bad.ret == 1
    bad.stdout.fnmatch_lines(["*latency_p95*0.100*0.200*FAIL (tolerance latency_p95:+25%*"])


def test_cost_gate(gated):
    p = gated(10, price=1.0)
    _save(gated, p)
    p.path.joinpath("models.yaml").write_text("models:\n  m:\n    type: scripted\n    cost_per_1k_prompt: 1.5\n")
    r = gated.run(p, (), 0.01, "--baseline", "baseline.json", "--tolerance", "cost:+10%")
    assert r.ret == 1
    r.stdout.fnmatch_lines(["*cost*0.100*0.150*FAIL (tolerance cost:+10%*"])


def test_floor(gated):
    p = gated(10)
    r = gated.run(p, (0, 1, 2), 0.01, "--fail-under", "pass_rate=0.8")
    assert r.ret == 1
    r.stdout.fnmatch_lines(["*pass_rate = 0.700 breaks the floor pass_rate=0.8*"])


def test_missing_baseline_entry_is_reported_not_failed_unless_required(gated):
    p = gated(5)
    _save(gated, p)
    r = gated.run(p, (), 0.01, "--baseline", "baseline.json")
    assert r.ret == 0
    r.stdout.fnmatch_lines(["*gate: PASSED*"])
    r = gated.run(p, (), 0.01, "--baseline", "baseline.json", "--model", "other")
    # --model given twice: m and other; "other" has no entry
    r.stdout.fnmatch_lines(["*test_eval.py::test_g [[]other[]]: no baseline entry; not gated*"])
    assert r.ret == 0
    r = gated.run(p, (), 0.01, "--baseline", "baseline.json", "--model", "other", "--require-baseline")
    assert r.ret == 1


def test_dataset_drift_is_reported_and_shared_cases_compared(gated):
    p = gated(6)
    _save(gated, p)
    rows = [json.dumps({"id": f"c{i:03d}", "prompt": f"c{i:03d}"}) for i in range(2, 9)]
    p.path.joinpath("cases.jsonl").write_text("\n".join(rows) + "\n")
    r = gated.run(p, (), 0.01, "--baseline", "baseline.json")
    r.stdout.fnmatch_lines(
        [
            "*the dataset changed since the baseline*",
            "*3 case(s) added (c006, c007, c008), 2 removed (c000, c001); compared on 4 shared cases*",
        ]
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "*baseline.json is not valid JSON*"),
        ('{"format": "something-else"}', "*is not a pytest-llmeval baseline*"),
        ('{"format": "pytest-llmeval-baseline", "version": 99, "entries": {}}', "*format version 99*this plugin reads version 1*"),
    ],
)
def test_corrupt_or_wrong_version_baseline_is_a_clear_error(gated, content, message):
    p = gated(3)
    p.path.joinpath("baseline.json").write_text(content)
    r = gated.run(p, (), 0.01, "--baseline", "baseline.json")
    assert r.ret == 1
    r.stdout.fnmatch_lines([message])
    assert "Traceback" not in r.stdout.str()


def test_errors_fail_the_gate_and_block_saving(gated, pytester):
    p = gated(4)
    _save(gated, p)
    before = p.path.joinpath("baseline.json").read_text()
    p.path.joinpath("conftest.py").write_text(
        p.path.joinpath("conftest.py").read_text().replace('cid = r.message_list[-1]["content"]',
                                                           'cid = r.message_list[-1]["content"]; 1 / 0')
    )
    r = gated.run(p, (), 0.01, "--baseline", "baseline.json", "--save-baseline", "baseline.json")
    assert r.ret == 1
    r.stdout.fnmatch_lines(["*4 item(s) errored; missing data cannot pass the gate*", "*baseline NOT saved*"])
    assert p.path.joinpath("baseline.json").read_text() == before


def test_interrupted_save_leaves_the_previous_file(tmp_path):
    target = tmp_path / "baseline.json"
    target.write_text('{"old": true}')

    class Boom:
        pass

    with pytest.raises(TypeError):
        gate.write_json_atomic(target, {"a": 1, "z": Boom()})
    assert target.read_text() == '{"old": true}'
    assert [f.name for f in tmp_path.iterdir()] == ["baseline.json"]


def test_same_verdict_with_xdist(gated):
    p = gated(40)
    _save(gated, p)
    r = gated.run(p, range(15), 0.01, "--baseline", "baseline.json", "-n", "2")
    assert r.ret == 1
    r.stdout.fnmatch_lines(["*pass_rate*1.000*0.625*-0.375*p=6.1e-05*FAIL*"])


@pytest.mark.parametrize("bad", ["pass_rate", "pass_rate:+0.1", "latency_p95:-5%", "x y:1"])
def test_bad_tolerance_is_a_usage_error_at_parse_time(gated, bad):
    p = gated(2)
    r = p.runpytest("--model", "m", "--tolerance", bad)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*bad tolerance*"])


def test_mcnemar_exact_values():
    assert gate.mcnemar_exact(0, 0) == 1.0
    assert gate.mcnemar_exact(2, 0) == pytest.approx(0.5)
    assert gate.mcnemar_exact(15, 0) == pytest.approx(2 / 2**15)
    assert gate.mcnemar_exact(5, 5) == 1.0


PER_MODEL_BACKEND = '''
import os
from pytest_llmeval.backends.base import Backend, Completion


class PerModel(Backend):
    """Answers "bad" for the case ids in $WRONG_<model name>, else "ok"."""

    mode = "batch"

    def generate_batch(self, requests, cancelled=None):
        wrong = set(filter(None, os.environ.get("WRONG_" + self.name, "").split(",")))
        return [Completion(text="bad" if r.message_list[-1]["content"] in wrong else "ok", latency_s=0.01,
                           prompt_tokens=3, completion_tokens=1) for r in requests]


def pytest_llmeval_register_backends():
    return {"permodel": PerModel}
'''


def test_models_compared_with_the_paired_test_in_one_run(pytester, monkeypatch):
    """``--model base --model tuned``: the summary gives tuned vs base with McNemar's p and CIs."""
    pytester.makeconftest(PER_MODEL_BACKEND)
    pytester.makefile(".yaml", models="models:\n  base:\n    type: permodel\n  tuned:\n    type: permodel\n")
    rows = [json.dumps({"id": f"c{i:02d}", "prompt": f"c{i:02d}"}) for i in range(30)]
    pytester.path.joinpath("cases.jsonl").write_text("\n".join(rows) + "\n")
    pytester.makeini(
        "[pytest]\nllmeval_models_file = models.yaml\nllmeval_cache = off\nllmeval_runs_dir = runs\n"
    )
    pytester.makepyfile(
        test_eval="from pytest_llmeval import dataset, scorers\n\n"
        "@dataset('cases.jsonl')\ndef test_g(case, completion):\n"
        "    scorers.exact_match(completion.text, 'ok')\n"
    )
    # base passes 10 of 30; tuned passes 27, including all of base's 10: 17 won, 0 lost.
    monkeypatch.setenv("WRONG_base", ",".join(f"c{i:02d}" for i in range(20)))
    monkeypatch.setenv("WRONG_tuned", "c00,c01,c02")
    r = pytester.runpytest("--model", "base", "--model", "tuned", "-p", "no:randomly")
    r.stdout.fnmatch_lines(
        [
            "*models compared on the same cases (paired)*",
            "*test_g: tuned vs base on 30 shared cases: pass rate 90.0% vs 33.3%, delta +56.7 points*"
            "McNemar p=1.5e-05 (17 won, 0 lost)*",
        ]
    )
    summary = json.loads(next(pytester.path.joinpath("runs").glob("*/summary.json")).read_text())
    (mc,) = summary["model_comparisons"]
    assert (mc["reference"], mc["model"], mc["only_model"], mc["only_reference"]) == ("base", "tuned", 17, 0)
    lo, hi = mc["pass_ci"]
    assert 0.3 < lo < mc["delta"] < hi <= 0.8
    html = next(pytester.path.joinpath("runs").glob("*/report.html")).read_text()
    table = html[html.index('id="llm-model-comparison"') :]
    assert "tuned vs base" in table[: table.index("</table>")] and "17 / 0" in table
    # The reference is the first --model given.
    r = pytester.runpytest("--model", "tuned", "--model", "base")
    r.stdout.fnmatch_lines(["*test_g: base vs tuned on 30 shared cases*delta -56.7 points*(0 won, 17 lost)*"])


def test_compare_models_needs_shared_cases():
    from pytest_llmeval.results import Aggregate

    a = Aggregate(test="t", model="a", cases={"x": {"passed": True, "score": 1.0}})
    b = Aggregate(test="t", model="b", cases={"y": {"passed": False, "score": 0.0}})
    assert gate.compare_models([a, b]) == []
    b.cases["x"] = {"passed": False, "score": 0.5}
    (mc,) = gate.compare_models([a, b])
    assert (mc.n, mc.delta, mc.only_reference, mc.p_value, mc.score) == (1, -1.0, 1, 1.0, 0.5)
