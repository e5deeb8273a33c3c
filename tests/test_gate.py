"""The baseline gate: save, compare, statistics, exit status and the final line."""

from __future__ import annotations

import json
import math

import pytest

from pytest_llmeval import baseline, gate, stats

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
    r.stdout.fnmatch_lines(
        ["*pass_rate*1.000*0.625*-0.375*p=6.1e-05*FAIL (tolerance pass_rate:+0, significant*"]
    )
    r.stdout.fnmatch_lines(["*gate: FAILED: test_eval.py::test_g [[]m[]]: pass_rate 1.000 -> 0.625*"])
    assert "1 gate failed" in r.stdout.lines[-1]


def test_case_failures_with_a_passing_gate_exit_zero(gated):
    p = gated(20)
    _save(gated, p, wrong=(1, 2))
    r = gated.run(p, (1, 2), 0.01, "--baseline", "baseline.json")
    assert r.ret == 0
    last = r.stdout.lines[-1]
    assert "2 failed" in last and "1 gate passed" in last


STRICT_5_POINTS = ("--tolerance", "pass_rate:-0.05", "--gate-mode", "strict")


def test_noise_within_tolerance_passes(gated):
    p = gated(40)
    _save(gated, p)
    r = gated.run(p, (3,), 0.01, "--baseline", "baseline.json", *STRICT_5_POINTS)
    assert r.ret == 0
    r.stdout.fnmatch_lines(["*within pass_rate:-0.05*"])


def test_same_drop_is_significant_on_large_n_only(gated):
    small = gated(10)
    _save(gated, small)
    r = gated.run(small, (0, 1), 0.01, "--baseline", "baseline.json", "--tolerance", "pass_rate:-0.05")
    assert r.ret == 0  # 20 points down on 10 cases: p = 0.5
    r.stdout.fnmatch_lines(["*beyond tolerance pass_rate:-0.05 but not significant (p=0.5)*"])
    r = gated.run(small, (0, 1), 0.01, "--baseline", "baseline.json", *STRICT_5_POINTS)
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
    p.path.joinpath("models.yaml").write_text(
        "models:\n  m:\n    type: scripted\n    cost_per_1k_prompt: 1.5\n"
    )
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
        (
            '{"format": "pytest-llmeval-baseline", "version": 99, "entries": {}}',
            "*format version 99*this plugin reads version 1*",
        ),
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
        p.path.joinpath("conftest.py")
        .read_text()
        .replace('cid = r.message_list[-1]["content"]', 'cid = r.message_list[-1]["content"]; 1 / 0')
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
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(2, 0) == pytest.approx(0.5)
    assert stats.mcnemar_exact(15, 0) == pytest.approx(2 / 2**15)
    assert stats.mcnemar_exact(5, 5) == 1.0


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


# -- issue 19 (2): tolerance and floor names ------------------------------------------
@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "--tolerance",
            "pass_rte:-0.02",
            "*unknown metric 'pass_rte' (did you mean pass_rate?); valid: pass_rate, "
            "latency_p50, latency_p95, cost, time_to_last_token_p50, time_to_last_token_p95, s_per_token_p50, "
            "score:NAME*",
        ),
        ("--tolerance", "exact_match:-0.1", "*unknown metric 'exact_match'*score:NAME*"),
        (
            "--fail-under",
            "pass_rat=0.8",
            "*bad floor 'pass_rat=0.8': unknown metric 'pass_rat' (did you mean pass_rate?)*",
        ),
        ("--fail-under", "latency_p95", "*bad floor*expected METRIC=VALUE*"),
    ],
)
def test_misspelled_metric_is_a_usage_error_listing_the_valid_names(gated, option, value, message):
    """Before, ``--tolerance pass_rte:-0.02`` was accepted and replaced the pass-rate check (1.0 -> 0.68 passed)."""
    p = gated(2)
    r = p.runpytest("--model", "m", option, value)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines([message])


def test_unknown_score_name_is_a_gate_error_listing_what_the_run_measured(gated):
    p = gated(10)
    _save(gated, p)
    r = gated.run(p, (), 0.01, "--baseline", "baseline.json", "--tolerance", "score:exact_macth:-0.1")
    assert r.ret == 1
    r.stdout.fnmatch_lines(
        [
            "*gate: FAILED: unknown metric(s) score:exact_macth in the tolerances/floors; this run measured: "
            "pass_rate, *score:exact_match*"
        ]
    )
    r = gated.run(p, (), 0.01, "--fail-under", "score:nope=0.5")
    assert r.ret == 1
    r.stdout.fnmatch_lines(["*gate: FAILED: unknown metric(s) score:nope*score:exact_match*"])
    # A known score name gates as before.
    strict = ("--tolerance", "score:exact_match:-0.1", "--gate-mode", "strict")
    r = gated.run(p, (0, 1, 2), 0.01, "--baseline", "baseline.json", *strict)
    assert r.ret == 1
    r.stdout.fnmatch_lines(["*score:exact_match*1.000*0.700*FAIL (tolerance score:exact_match:-0.1)*"])


def test_a_user_tolerance_keeps_the_default_pass_rate_check(gated):
    p = gated(40)
    _save(gated, p)
    r = gated.run(p, range(15), 0.01, "--baseline", "baseline.json", "--tolerance", "latency_p95:+25%")
    assert r.ret == 1
    r.stdout.fnmatch_lines(
        [
            "*pass_rate*1.000*0.625*FAIL (tolerance pass_rate:+0, significant*",
            "*latency_p95*0.010*0.010*within latency_p95:+25%*",
        ]
    )


def test_ini_tolerance_with_an_unknown_metric_is_a_gate_error_not_a_crash():
    with pytest.raises(gate.ConfigError, match="unknown metric 'pass_rte'"):
        gate.parse_tolerance("pass_rte:-0.02")
    with pytest.raises(ValueError):  # and a ValueError, which option parsing turns into a usage error
        gate.parse_floor("cots=1")


# -- issue 19 (4): the baseline file's shape --------------------------------------------
def _baseline_text(entries: object) -> str:
    return json.dumps({"format": gate.FORMAT, "version": gate.VERSION, "metadata": {}, "entries": entries})


@pytest.mark.parametrize(
    ("entries", "path", "what"),
    [
        (
            {"tests/x.py::t": {"smollm2": {"cases": {"c1": True}}}},
            "entries.tests/x.py::t.smollm2.cases.c1",
            "True is not of type 'object'",
        ),
        (
            {"tests/x.py::t": {"smollm2": {"cases": []}}},
            "entries.tests/x.py::t.smollm2.cases",
            "[] is not of type 'object'",
        ),
        ({"tests/x.py::t": [1, 2]}, "entries.tests/x.py::t", "[1, 2] is not of type 'object'"),
        ([], "entries", "[] is not of type 'object'"),
        (
            {"t": {"m": {"cases": {"c1": {"passed": "yes"}}}}},
            "entries.t.m.cases.c1.passed",
            "'yes' is not of type",
        ),
        (
            {"t": {"m": {"cases": {"c1": {"score": 1.0}}}}},
            "entries.t.m.cases.c1",
            "'passed' is a required property",
        ),
        ({"t": {"m": {"pass_rate": "high"}}}, "entries.t.m.pass_rate", "'high' is not of type"),
        (
            {"t": {"m": {"cases": {"c1": {"passed": True, "samples": 3}}}}},
            "entries.t.m.cases.c1",
            "'pass_fraction' is a dependency of 'samples'",
        ),
    ],
)
def test_a_baseline_of_the_wrong_shape_is_a_config_error_naming_the_json_path(tmp_path, entries, path, what):
    f = tmp_path / "baseline.json"
    f.write_text(_baseline_text(entries))
    with pytest.raises(gate.ConfigError) as e:
        gate.load_baseline(f)
    assert str(e.value).startswith(f"baseline {f}: {path}: {what}")
    assert "--save-baseline" in str(e.value)


def test_a_baseline_of_the_wrong_shape_fails_the_gate_with_its_path_and_no_traceback(gated):
    """Before, a case entry ``true`` crashed pytest_sessionfinish with an AttributeError."""
    p = gated(3)
    p.path.joinpath("baseline.json").write_text(
        _baseline_text({"test_eval.py::test_g": {"m": {"cases": {"c000": True}}}})
    )
    r = gated.run(p, (), 0.01, "--baseline", "baseline.json")
    assert r.ret == 1
    r.stdout.fnmatch_lines(
        [
            "*gate: FAILED: baseline *baseline.json: entries.test_eval.py::test_g.m.cases.c000: "
            "True is not of type 'object'*"
        ]
    )
    assert "Traceback" not in r.stdout.str() and "AttributeError" not in r.stdout.str()


def test_the_repositorys_baseline_and_one_with_repeats_load(tmp_path):
    from pathlib import Path

    data = gate.load_baseline(Path(__file__).resolve().parents[1] / "evals" / "baseline.json")
    assert len(data["entries"]) >= 3
    entries = _entries(_agg({"c1": [True, False, True], "c2": [True] * 3}))
    assert entries[T][M]["cases"]["c1"] == {
        "passed": True,
        "score": 0.666667,
        "latency": 1.5,
        "pass_fraction": 0.666667,
        "samples": 3,
    }
    f = tmp_path / "baseline.json"
    f.write_text(_baseline_text(entries))
    assert gate.load_baseline(f)["entries"] == entries


# -- issue 21 (2): aggregation with samples ---------------------------------------------
T, M = "tests/t.py::test_s", "m"


def _records(
    flags: dict[str, list[bool]],
    *,
    model: str = M,
    scores: dict[str, list[float]] | None = None,
    repeats: bool | None = None,
) -> list:
    """One record per sample; with ``repeats`` (default: when a case has several) they carry sample fields."""
    from pytest_llmeval.results import CaseResult

    out = []
    for cid, fs in flags.items():
        n = len(fs)
        for j, ok in enumerate(fs):
            value = scores[cid][j] if scores else float(ok)
            rec = CaseResult(
                nodeid=f"{T}[{model}-{cid}-{j}]",
                test=T,
                model=model,
                case_id=cid,
                outcome="passed" if ok else "failed",
                passed=ok,
                latency_s=0.5 + j,
                scores=[{"name": "exact_match", "value": value, "passed": ok}],
            )
            if repeats or (repeats is None and n > 1):
                rec.sample, rec.samples = j, n
            out.append(rec)
    return out


def _agg(flags: dict[str, list[bool]], **kw):
    from pytest_llmeval.results import aggregate

    (a,) = aggregate(_records(flags, **kw))
    return a


def _entries(a) -> dict:
    return {
        a.test: {
            a.model: {
                "n": a.n,
                "pass_rate": a.pass_rate,
                "scores": dict(a.scores),
                "cases": {cid: baseline.case_entry(c) for cid, c in a.cases.items()},
            }
        }
    }


def test_outcome_from_samples_policies():
    from pytest_llmeval.results import DEFAULT_SAMPLE_POLICY, outcome_from_samples

    p, f = "passed", "failed"
    assert DEFAULT_SAMPLE_POLICY == "majority"
    table = {
        (p, p, p): ("passed", "passed", "passed"),
        (p, p, f): ("failed", "passed", "passed"),
        (p, f, f): ("failed", "failed", "passed"),
        (f, f, f): ("failed", "failed", "failed"),
        (p, f): ("failed", "failed", "passed"),  # a tie is not a majority
        (p, p, "skipped"): ("passed", "passed", "passed"),
        (p, p, "error"): ("error", "error", "error"),  # missing data cannot pass
        ("skipped",): ("skipped", "skipped", "skipped"),
    }
    for outcomes, expected in table.items():
        got = tuple(outcome_from_samples(list(outcomes), policy) for policy in ("all", "majority", "any"))
        assert got == expected, outcomes
    assert outcome_from_samples([p, p, f]) == "passed"
    with pytest.raises(ValueError, match="all, majority, any"):
        outcome_from_samples([p], "most")


def test_aggregate_groups_samples_into_pass_fractions_pass_at_k_and_flaky_cases():
    a = _agg(
        {
            "always": [True] * 3,
            "never": [False] * 3,
            "twice": [True, False, True],
            "once": [False, False, True],
        },
        scores={
            "always": [1.0, 1.0, 1.0],
            "never": [0.0, 0.1, 0.2],
            "twice": [0.9, 0.4, 0.7],
            "once": [0.2, 0.3, 0.8],
        },
    )
    assert (a.n, a.passed, a.failed, a.pass_rate) == (12, 6, 6, 0.5)  # every sample is an item
    assert a.cases["twice"] == {
        "passed": True,
        "outcome": "passed",
        "score": pytest.approx(2 / 3),
        "latency": 1.5,
        "pass_fraction": pytest.approx(2 / 3),
        "samples": 3,
    }
    assert a.cases["once"]["passed"] is False and a.cases["once"]["pass_fraction"] == pytest.approx(1 / 3)
    r = a.repeats
    assert (r.k, r.cases, r.mean_pass_rate) == (3, 4, pytest.approx(0.5))
    assert r.pass_at_k == 0.75 and r.pass_all_k == 0.25  # 3 of 4 cases pass at least once, 1 always
    assert [f["case_id"] for f in r.flaky] == ["once", "twice"]  # equally flaky: wider score spread first
    assert r.flaky[0] == {
        "case_id": "once",
        "pass_fraction": pytest.approx(1 / 3),
        "samples": 3,
        "outcomes": ["failed", "failed", "passed"],
        "score_min": 0.2,
        "score_max": 0.8,
        "spread": pytest.approx(0.6),
    }
    d = a.to_dict()
    assert d["repeats"]["pass_at_k"] == 0.75 and json.dumps(d)


def test_aggregate_of_samples_with_unequal_counts_uses_the_unbiased_estimators():
    from pytest_llmeval import stats

    a = _agg({"a": [True, False, False, False], "b": [True, True]})
    assert a.repeats.k == 2
    assert a.repeats.pass_at_k == pytest.approx((stats.pass_at_k(4, 1, 2) + 1.0) / 2)  # (0.5 + 1) / 2
    assert a.repeats.pass_all_k == pytest.approx((0.0 + 1.0) / 2)
    assert a.repeats.mean_pass_rate == pytest.approx((0.25 + 1.0) / 2)


def test_aggregates_without_samples_are_unchanged():
    """Records as before repeats (no sample fields at all) aggregate to exactly the old shape and values."""
    from pytest_llmeval.results import CaseResult, aggregate

    old = []
    for rec in _records({"c1": [True], "c2": [False], "c3": [True]}):
        d = json.loads(rec.to_json())
        del d["sample"], d["samples"]  # a record written before these fields existed
        old.append(CaseResult.from_json(json.dumps(d)))
    (a,) = aggregate(old)
    assert a.repeats is None
    d = a.to_dict()
    assert "repeats" not in d
    assert d["cases"] == {
        "c1": {"passed": True, "outcome": "passed", "score": 1.0, "latency": 0.5},
        "c2": {"passed": False, "outcome": "failed", "score": 0.0, "latency": 0.5},
        "c3": {"passed": True, "outcome": "passed", "score": 1.0, "latency": 0.5},
    }
    assert (d["n"], d["passed"], d["pass_rate"], d["scores"]) == (3, 2, 2 / 3, {"exact_match": 2 / 3})
    # One sample per case, with the fields present, is the same aggregate.
    (b,) = aggregate(_records({"c1": [True], "c2": [False], "c3": [True]}, repeats=True))
    assert b.to_dict() == d
    assert _entries(a)[T][M]["cases"]["c1"] == {"passed": True, "score": 1.0, "latency": 0.5}


# -- issue 21 (4): the clustered test ---------------------------------------------------
def test_sign_flip_test_is_exact_and_equals_mcnemar_on_pass_fail_pairs():
    import itertools
    from fractions import Fraction

    from pytest_llmeval import stats

    for b in range(9):
        for c in range(9):
            diffs = [Fraction(-1)] * b + [Fraction(1)] * c + [Fraction(0)] * 2
            assert stats.sign_flip_test(diffs) == pytest.approx(stats.mcnemar_exact(b, c), abs=1e-12)
    diffs = [Fraction(-2, 3), Fraction(-1, 3), Fraction(-1), Fraction(1, 3), Fraction(-2, 3), Fraction(0)]
    nonzero = [d for d in diffs if d]
    extreme = sum(
        abs(sum(s * abs(d) for s, d in zip(signs, nonzero, strict=True))) >= abs(sum(nonzero))
        for signs in itertools.product((1, -1), repeat=len(nonzero))
    )
    exact = extreme / 2 ** len(nonzero)
    assert stats.sign_flip_test(diffs) == pytest.approx(exact, abs=1e-12)
    assert stats.pass_fraction_test(
        [(2, 3), (1, 3), (3, 3), (0, 3), (2, 3), (1, 3)], [(0, 3), (0, 3), (0, 3), (1, 3), (0, 3), (1, 3)]
    ) == pytest.approx(exact)
    # Floats take the Monte Carlo path: within its error of the exact value.
    assert stats.sign_flip_test([float(d) for d in diffs]) == pytest.approx(exact, abs=0.01)


def test_a_drop_spread_over_many_cases_is_significant_with_repeats_and_not_without():
    """The same 20-point drop on 20 cases: 4 cases failing once (p = 0.125), or 2 of 5 samples lost on 10 cases."""
    cases = [f"c{i:02d}" for i in range(20)]
    base1 = _agg({c: [True] for c in cases})
    cur1 = _agg({c: [i >= 4] for i, c in enumerate(cases)})
    v1 = gate.compare(_entries(base1), [cur1], tolerances=[], floors=[])
    (row1,) = v1.rows
    assert v1.passed and row1.method == "McNemar" and row1.delta == pytest.approx(-0.2)
    assert row1.p_value == pytest.approx(0.125)

    base5 = _agg({c: [True] * 5 for c in cases})
    cur5 = _agg({c: [True] * 3 + [False] * 2 if i < 10 else [True] * 5 for i, c in enumerate(cases)})
    v5 = gate.compare(_entries(base5), [cur5], tolerances=[], floors=[])
    (row5,) = v5.rows
    assert not v5.passed and row5.status == "FAIL" and row5.method == "sign-flip over cases"
    assert row5.delta == pytest.approx(-0.2) and row5.p_value == pytest.approx(2 / 2**10)
    lo, hi = row5.ci
    assert -0.3 < lo < -0.2 < hi < -0.1


def test_samples_of_one_case_do_not_count_as_independent_evidence():
    """4 cases lost in all 5 samples: 20 lost pairs if pooled (p < 1e-5), but 4 cases to the gate (p = 0.125)."""
    from pytest_llmeval import stats

    cases = [f"c{i:02d}" for i in range(20)]
    base = _agg({c: [True] * 5 for c in cases})
    cur = _agg({c: [i >= 4] * 5 for i, c in enumerate(cases)})
    v = gate.compare(_entries(base), [cur], tolerances=[], floors=[])
    assert v.passed and v.rows[0].p_value == pytest.approx(0.125)
    assert stats.mcnemar_exact(20, 0) < 1e-5


def test_a_baseline_without_repeats_against_a_run_with_repeats_uses_the_clustered_test():
    cases = [f"c{i:02d}" for i in range(12)]
    base = _agg({c: [True] for c in cases})
    cur = _agg({c: [True, True, False] for c in cases})
    (row,) = gate.compare(_entries(base), [cur], tolerances=[], floors=[]).rows
    assert row.method == "sign-flip over cases" and row.delta == pytest.approx(-1 / 3)
    assert row.p_value == pytest.approx(2 / 2**12) and row.status == "FAIL"


def test_models_compared_with_repeats_use_the_clustered_test():
    cases = [f"c{i:02d}" for i in range(10)]
    ref = _agg({c: [True] * 3 for c in cases})
    other = _agg({c: [True, False, True] for c in cases}, model="other")
    (mc,) = gate.compare_models([ref, other])
    assert (mc.method, mc.only_reference, mc.only_model) == ("sign-flip over cases", 10, 0)
    assert mc.p_value == pytest.approx(2 / 2**10)
    assert "sign-flip p=0.002 (0 won, 10 lost)" in mc.line()


# -- issue 19 (8): the minimum detectable effect ------------------------------------------
def _row(
    n: int, repeats: int = 1, mode: str = "significant", tol: str | None = None, passing: int | None = None
):
    flags = {f"c{i:03d}": [passing is None or i < passing] * repeats for i in range(n)}
    a = _agg(flags)
    tols = [gate.parse_tolerance(tol)] if tol else []
    return gate.compare(_entries(a), [a], tolerances=tols, floors=[], mode=mode).rows[0]


def test_minimum_detectable_effect_for_5_50_and_150_cases():
    from pytest_llmeval import stats

    assert stats.min_significant_cases(0.05) == 6  # 2 * 0.5**6 = 0.031 < 0.05 <= 2 * 0.5**5
    small = _row(5)
    assert small.mde is None and "McNemar on 5 shared case(s) can never reach p < 0.05" in small.cannot_fail
    assert _row(50).mde == pytest.approx(6 / 50) and not _row(50).cannot_fail
    assert _row(150).mde == pytest.approx(6 / 150)
    # Repeats: 6 cases losing one sample each is the most extreme outcome on 6 changed cases.
    assert _row(150, repeats=3).mde == pytest.approx(6 / 450)
    assert _row(50, repeats=5).mde == pytest.approx(6 / 250)
    assert "sign-flip over cases on 5 shared case(s) can never" in _row(5, repeats=5).cannot_fail
    # The tolerance: the drop must also exceed it (by a whole case).
    assert _row(150, tol="pass_rate:-0.05").mde == pytest.approx(8 / 150)
    # Strict mode: the tolerance alone, so even 5 cases can fail on one lost case.
    assert _row(5, mode="strict").mde == pytest.approx(1 / 5) and not _row(5, mode="strict").cannot_fail
    # Only 4 of 150 cases passed in the baseline: they cannot supply 6 lost cases.
    few = _row(150, passing=4)
    assert few.mde is None and "only 4 of 150 shared cases passed in the baseline" in few.cannot_fail
    assert (
        json.loads(json.dumps(gate.Verdict(rows=[few]).to_dict()))["rows"][0]["cannot_fail"]
        == few.cannot_fail
    )


def test_a_gate_that_cannot_fail_says_so_in_yellow(gated):
    """Before, 5 cases going from 40% to 0% were "not significant (p=0.5)", gate PASSED, and nothing else."""
    p = gated(5)
    _save(gated, p, wrong=(2, 3, 4))
    r = gated.run(p, range(5), 0.01, "--baseline", "baseline.json", "--color=yes")
    assert r.ret == 0
    (line,) = [ln for ln in r.stdout.lines if "cannot fail" in ln]
    assert "\x1b[33m" in line  # yellow
    r = gated.run(p, range(5), 0.01, "--baseline", "baseline.json")
    r.stdout.fnmatch_lines(
        [
            "*delta*mde verdict*",
            "*pass_rate*0.400*0.000*-0.400*p=0.5*never ok (beyond tolerance pass_rate:+0 but not significant (p=0.5)); "
            "cannot fail: McNemar on 5 shared case(s) can never reach p < 0.05 (it needs 6 cases to change one way); "
            "add cases or use --gate-mode strict*",
        ]
    )
    r = gated.run(p, range(5), 0.01, "--baseline", "baseline.json", "--gate-mode", "strict")
    assert r.ret == 1
    r.stdout.fnmatch_lines(["*pass_rate*0.400*0.000*0.200 FAIL (tolerance pass_rate:+0)*"])


def test_gate_table_prints_the_mde(gated):
    p = gated(60)
    _save(gated, p)
    r = gated.run(p, range(12), 0.01, "--baseline", "baseline.json")
    r.stdout.fnmatch_lines(["*pass_rate*1.000*0.800*-0.200*p=0.000488* 0.100 FAIL (tolerance pass_rate:+0*"])


# -- issue 21 (5): the gate, calibrated ---------------------------------------------------
def _calibration():
    """bench/gate_calibration.py, imported by path (bench/ is not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    if "gate_calibration" in sys.modules:
        return sys.modules["gate_calibration"]
    path = Path(__file__).resolve().parents[1] / "bench" / "gate_calibration.py"
    spec = importlib.util.spec_from_file_location("gate_calibration", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gate_calibration"] = module  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def _binomial_quantile(trials: int, p: float, q: float) -> int:
    """The smallest k with P(Binomial(trials, p) <= k) >= q."""
    total = 0.0
    for k in range(trials + 1):
        total += math.exp(
            math.lgamma(trials + 1)
            - math.lgamma(k + 1)
            - math.lgamma(trials - k + 1)
            + k * math.log(p)
            + (trials - k) * math.log1p(-p)
        )
        if total >= q:
            return k
    return trials


def test_calibration_builds_cases_as_aggregate_does():
    """The simulation's synthetic aggregates are what results.aggregate makes of the same samples."""
    import numpy as np

    from pytest_llmeval.results import aggregate

    cal = _calibration()
    rng = np.random.default_rng(0)
    for repeats in (1, 3):
        outcomes = cal.sample(rng, cal.suite(rng, 30), repeats)
        flags = {f"c{i:04d}": list(map(bool, row)) for i, row in enumerate(outcomes)}
        recs = _records(flags, repeats=repeats > 1)
        for r in recs:
            r.latency_s = None
        (real,) = aggregate(recs)
        synthetic = cal.aggregate_of(outcomes)
        assert synthetic.cases == real.cases
        assert (synthetic.n, synthetic.passed, synthetic.pass_rate) == (real.n, real.passed, real.pass_rate)


def test_false_alarm_rate_of_the_gate_stays_at_or_below_alpha():
    """A/A runs (the same model twice) on 60 heterogeneous cases, without and with repeats.

    600 comparisons each, fixed seeds (bench/gate_calibration.py reports n = 150). Monte Carlo tolerance: a count fails the test only
    above the 99.9% quantile of Binomial(600, rate), for rate = alpha (p < alpha in either
    direction) and alpha / 2 (a failed gate: only drops fail). Measured: see
    docs/gate_statistics.md (about 0.02 failed, 0.04-0.05 significant).
    """
    from pytest_llmeval import stats

    cal = _calibration()
    trials = 600
    for repeats in (1, 3):
        failed, significant = cal.false_alarms(60, repeats, trials, seed=repeats)
        assert failed.hits <= _binomial_quantile(trials, stats.ALPHA / 2, 0.999), (repeats, str(failed))
        assert significant.hits <= _binomial_quantile(trials, stats.ALPHA, 0.999), (repeats, str(significant))
        assert significant.hits > 0  # the test is not vacuous: A/A noise does reach p < alpha sometimes
