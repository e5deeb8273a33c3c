"""Repeats (issue 21): samples per case, their cache keys, outcome policies, flaky cases, the clustered gate.

The model is the loopback OpenAI server (tests/fakes.py) with a responder that samples the
way a real server does: at temperature 0 it always gives its greedy answer, above 0 its
answer depends on the request's ``seed``, so the seed each sample sends is what decides it.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from typing import Any

import pytest
from fakes import FakeOpenAIServer, models_yaml

TEST_BODY = (
    "from pytest_llmeval import dataset, scorers\n\n"
    "@dataset('cases.jsonl', max_tokens=8{extra})\n"
    "def test_s(case, completion):\n"
    "    scorers.exact_match(completion.text, 'yes')\n"
)


def sampler(state: dict[str, Any]):
    """Answers "yes" or "no" for a case prompt ``ID RATE``: greedy "yes" when RATE >= 0.5; sampled,
    "yes" for a share RATE of the seeds (a fixed hash of case and seed). ``state["fail"]``, when set,
    decides instead: a function (case id, seed) -> True for "no"."""

    def respond(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
        cid, rate = str(messages[-1]["content"]).split()
        seed = int(body.get("seed") or 0)
        if state.get("fail") is not None:
            return state.get("bad", "no") if state["fail"](cid, seed) else "yes"
        if not body.get("temperature"):
            return "yes" if float(rate) >= 0.5 else "no"
        return "yes" if zlib.crc32(f"{cid}:{seed}".encode()) % 1000 < float(rate) * 1000 else "no"

    return respond


@pytest.fixture
def sampled(pytester, monkeypatch):
    """A project with models ``hot`` (temperature 0.7) and ``cold`` (temperature 0) on a sampling server."""
    state: dict[str, Any] = {}
    with FakeOpenAIServer(sampler(state)) as srv:

        def make(rates: list[float], *, extra: str = "", ini: str = "", cache: str = "off", **hot: Any):
            text = models_yaml(srv.base_url, ("hot",), params={"temperature": 0.7}, **hot)
            text += models_yaml(srv.base_url, ("cold",)).removeprefix("models:\n")
            pytester.makefile(".yaml", models=text)
            rows = [json.dumps({"id": f"c{i:02d}", "prompt": f"c{i:02d} {r}"}) for i, r in enumerate(rates)]
            pytester.path.joinpath("cases.jsonl").write_text("\n".join(rows) + "\n")
            pytester.makeini(
                f"[pytest]\nllmeval_models_file = models.yaml\nllmeval_cache = {cache}\n"
                f"llmeval_metrics_db = metrics.db\nllmeval_runs_dir = runs\n{ini}"
            )
            pytester.makepyfile(test_eval=TEST_BODY.format(extra=extra))
            return pytester

        make.srv = srv
        make.state = state
        yield make


def _records(p, result) -> list[dict[str, Any]]:
    """The records of the run that ``result`` came from (its run folder's results.jsonl)."""
    line = next(ln for ln in result.outlines if ln.startswith("run folder: "))
    folder = p.path / line.removeprefix("run folder: ").strip()
    return [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]


def _summary(p, result) -> dict[str, Any]:
    line = next(ln for ln in result.outlines if ln.startswith("run folder: "))
    return json.loads((p.path / line.removeprefix("run folder: ").strip() / "summary.json").read_text())


def test_one_item_per_case_with_one_record_per_sample_each_with_its_seed(sampled):
    p = sampled([1.0, 0.0, 0.5])
    sampled.state["fail"] = lambda cid, seed: cid == "c01" or (cid == "c02" and seed == 1)
    r = p.runpytest("--model", "hot", "--repeat", "3", "-p", "no:randomly", "-v")
    # Item ids are those of a run without repeats: one item per (case, model).
    r.stdout.fnmatch_lines(
        ["*test_s?hot-c00? PASSED*", "*test_s?hot-c01? FAILED*", "*test_s?hot-c02? PASSED*"]
    )
    assert sum(r.parseoutcomes().get(k, 0) for k in ("passed", "failed")) == 3
    recs = _records(p, r)
    assert len(recs) == 9
    by_case = {}
    for rec in recs:
        by_case.setdefault(rec["case_id"], []).append(rec)
    for cid, rs in by_case.items():
        assert sorted(x["sample"] for x in rs) == [0, 1, 2] and {x["samples"] for x in rs} == {3}
        ids = {x["sample"]: x["nodeid"] for x in rs}
        assert ids[0] == f"test_eval.py::test_s[hot-{cid}]" and ids[2] == ids[0] + "#s2"
    # Sample 0 is the request of a run without repeats (no seed); sample J sends seed J.
    seeds = sorted((b["messages"][-1]["content"].split()[0], b.get("seed", -1)) for b in sampled.srv.requests)
    assert seeds == sorted((c, s) for c in ("c00", "c01", "c02") for s in (-1, 1, 2))
    assert all(x["outcome"] == "passed" for x in by_case["c00"])
    assert all(x["outcome"] == "failed" for x in by_case["c01"])
    r.stdout.fnmatch_lines(
        [
            "*repeats: 3 cases x 3 samples | mean pass rate 55.6% | pass@3 66.7% | pass^3 33.3% | flaky 1 of 3",
            "*flaky c02: passed 2/3 (0.67) ?PFP?, main score 0.00..1.00 (spread 1.00)",
        ]
    )


def test_each_sample_has_its_own_cache_entry_and_sample_0_keeps_the_key_of_a_run_without_repeats(sampled):
    p = sampled([1.0, 0.0, 0.5], cache="rw")
    p.runpytest("--model", "hot")
    assert len(sampled.srv.requests) == 3
    r = p.runpytest("--model", "hot", "--repeat", "3")
    assert len(sampled.srv.requests) == 3 + 6  # sample 0 of every case came from the cache
    first = _records(p, r)
    warm = p.runpytest("--model", "hot", "--repeat", "3")
    assert len(sampled.srv.requests) == 9  # a warm rerun replays every sample: zero calls
    again = _records(p, warm)
    assert all(x["cached"] for x in again) and len(again) == 9
    keys = {x["nodeid"]: x["extra"]["cache"]["key"] for x in first}
    assert len(set(keys.values())) == 9
    assert keys == {x["nodeid"]: x["extra"]["cache"]["key"] for x in again}
    warm.stdout.fnmatch_lines(["generation: 9 completions (9 from cache)*"])


@pytest.mark.parametrize(
    ("policy", "outcomes"),
    [
        ("all", {"passed": 1, "failed": 3}),
        ("majority", {"passed": 2, "failed": 2}),
        ("any", {"passed": 3, "failed": 1}),
    ],
)
def test_outcome_policies(sampled, policy, outcomes):
    """Cases passing 3, 2, 1 and 0 of 3 samples: all / majority / any pass 1, 2, 3 of them."""
    p = sampled([1.0, 1.0, 1.0, 1.0])
    passes = {"c00": 3, "c01": 2, "c02": 1, "c03": 0}
    sampled.state["fail"] = lambda cid, seed: seed >= passes[cid]
    r = p.runpytest("--model", "hot", "--repeat", "3", "--repeat-policy", policy)
    r.assert_outcomes(**outcomes)
    agg = _summary(p, r)["aggregates"][0]
    # The aggregate counts samples (6 of 12 pass) and reads pass fractions whatever the policy.
    assert (agg["n"], agg["passed"], agg["repeats"]["pass_at_k"], agg["repeats"]["pass_all_k"]) == (
        12,
        6,
        0.75,
        0.25,
    )
    assert {c: v["passed"] for c, v in agg["cases"].items()} == {
        "all": {"c00": True, "c01": False, "c02": False, "c03": False},
        "majority": {"c00": True, "c01": True, "c02": False, "c03": False},
        "any": {"c00": True, "c01": True, "c02": True, "c03": False},
    }[policy]


def test_repeat_from_the_ini_key_and_the_dataset_and_the_command_line_wins(sampled):
    p = sampled([1.0, 1.0], extra=", repeat=2", ini="llmeval_repeat = 4\nllmeval_repeat_policy = all\n")
    sampled.state["fail"] = lambda cid, seed: cid == "c01" and seed == 1
    r = p.runpytest("--model", "hot")
    r.assert_outcomes(passed=1, failed=1)  # the dataset's 2 samples, the ini's policy
    assert len(_records(p, r)) == 4
    r = p.runpytest("--model", "hot", "--repeat", "3")
    assert len(_records(p, r)) == 6
    p.makepyfile(test_eval=TEST_BODY.format(extra=""))
    r = p.runpytest("--model", "hot")
    assert len(_records(p, r)) == 8


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_a_bad_repeat_is_a_usage_error(sampled, bad):
    p = sampled([1.0])
    r = p.runpytest("--model", "hot", "--repeat", bad)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*--repeat*whole number*"])


def test_a_greedy_model_warns_once_and_is_called_once_per_case(sampled):
    p = sampled([1.0, 1.0, 0.0, 1.0])
    r = p.runpytest("--model", "cold", "--repeat", "5")
    assert len(sampled.srv.requests) == 4
    assert r.stdout.str().count("decodes greedily") == 1
    r.stdout.fnmatch_lines(["*model cold decodes greedily (temperature 0), so its 5 samples per case*"])
    recs = _records(p, r)
    assert len(recs) == 4 and {x["samples"] for x in recs} == {1}
    assert "repeats" not in _summary(p, r)["aggregates"][0]  # one sample: aggregated as without repeats


def _spread_drop(cid: str, seed: int) -> bool:
    """Cases c00..c09 each fail 2 of 5 seeds ({i, i+1} mod 5; seed 0 is sample 0): a 20-point drop on
    20 cases, spread over 10 of them. Sample 0 alone sees 4 cases fail (c00, c04, c05, c09)."""
    i = int(cid[1:])
    return i < 10 and seed % 5 in (i % 5, (i + 1) % 5)


@pytest.mark.parametrize("repeat", [5, 1])
def test_a_drop_spread_over_cases_fails_the_gate_with_repeats_and_not_without(sampled, repeat):
    p = sampled([1.0] * 20)
    args = ["--model", "hot", "--repeat", str(repeat)]
    sampled.state["fail"] = lambda cid, seed: False
    r = p.runpytest(*args, "--save-baseline", "baseline.json")
    r.stdout.fnmatch_lines(["*baseline saved*"])
    sampled.state["fail"] = _spread_drop
    r = p.runpytest(*args, "--baseline", "baseline.json")
    row = next(ln for ln in r.outlines if "pass_rate" in ln and "test_s [hot]" in ln)
    assert " 1.000 " in row and " 0.800 " in row and "-0.200" in row
    if repeat == 5:  # 10 cases each lost 2 of 5 samples: p = 2 / 2**10
        assert r.ret == 1 and "p=0.00195" in row and "FAIL" in row
        r.stdout.fnmatch_lines(["gate: FAILED*"])
    else:  # 4 cases lost their one sample: p = 2 / 2**4, not significant
        assert r.ret == 0 and "p=0.125" in row and "not significant" in row
        r.stdout.fnmatch_lines(["gate: PASSED*"])


def test_xdist_gives_the_same_aggregates(sampled):
    p = sampled([1.0, 0.5, 0.3, 0.0, 0.8, 0.6], cache="rw")
    one = _summary(p, p.runpytest("--model", "hot", "--repeat", "3", "-p", "no:randomly"))
    two = _summary(p, p.runpytest("--model", "hot", "--repeat", "3", "-n", "2"))
    timing = ("latency", "time_to", "s_per_token", "cached", "cost_")
    for agg in (one["aggregates"][0], two["aggregates"][0]):
        for k in [k for k in agg if k.startswith(timing)]:
            del agg[k]
        for c in agg["cases"].values():
            c.pop("latency")
    assert one["aggregates"] == two["aggregates"]
    assert one["aggregates"][0]["repeats"]["cases"] == 6


def test_metrics_db_keeps_a_row_per_sample_and_llmeval_flaky_lists_cases_across_runs(sampled, capsys):
    from pytest_llmeval.cli import main

    p = sampled([1.0, 1.0, 1.0])
    sampled.state["fail"] = lambda cid, seed: cid == "c02" and seed == 1
    p.runpytest("--model", "hot", "--repeat", "3")
    sampled.state["fail"] = lambda cid, seed: cid == "c01"  # without repeats: c01 flips between runs
    p.runpytest("--model", "hot")
    conn = sqlite3.connect(p.path / "metrics.db")
    rows = conn.execute(
        "SELECT nodeid, case_id, sample, samples, outcome FROM results ORDER BY rowid"
    ).fetchall()
    assert len(rows) == 9 + 3
    assert ("test_eval.py::test_s[hot-c02]#s1", "c02", 1, 3, "failed") in rows
    assert ("test_eval.py::test_s[hot-c02]", "c02", 0, 1, "passed") in rows
    metrics = dict(
        conn.execute("SELECT metric, value FROM aggregates WHERE metric LIKE 'pass%' OR metric = 'flaky'")
    )
    assert metrics["pass_at_k"] == 1.0 and metrics["flaky"] == 1.0
    capsys.readouterr()
    assert main(["flaky", "--db", str(p.path / "metrics.db"), "--last", "2", "--json"]) == 0
    found = {f["case_id"]: f for f in json.loads(capsys.readouterr().out)}
    assert set(found) == {"c01", "c02"}
    assert (found["c02"]["passed"], found["c02"]["samples"], found["c02"]["flaky_runs"]) == (3, 4, 1)
    assert (found["c01"]["passed"], found["c01"]["samples"], found["c01"]["flaky_runs"]) == (3, 4, 0)
    assert found["c01"]["last_outcomes"] == ["failed"]
    assert main(["flaky", "--db", str(p.path / "metrics.db"), "--last", "1"]) == 0
    out = capsys.readouterr().out
    assert "no flaky cases in the last 1 run(s)" in out
    assert main(["flaky", "--db", str(p.path / "metrics.db")]) == 0
    assert "2 flaky case(s) in the last 10 run(s)" in capsys.readouterr().out


def test_the_report_shows_pass_at_k_and_flaky_cases_with_their_samples_side_by_side_escaped(sampled):
    p = sampled([1.0, 1.0, 1.0])
    sampled.state["fail"] = lambda cid, seed: cid == "c01" and seed == 2
    sampled.state["bad"] = "<script>alert(1)</script>"
    r = p.runpytest("--model", "hot", "--repeat", "3")
    line = next(ln for ln in r.outlines if ln.startswith("HTML report: "))
    page = (p.path / line.removeprefix("HTML report: ").strip()).read_text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    repeats = page.split('id="llm-repeats"', 1)[1].split("</table>", 1)[0]
    assert "<td>3</td><td>3</td><td>88.9%</td><td>100.0%</td><td>66.7%</td><td>1</td>" in repeats
    flaky = page.split('id="llm-flaky-hot"', 1)[1].split("</table>", 1)[0]
    assert flaky.count('class="llm-flaky"') == 1 and "<b>c01</b>" in flaky and "2/3 (0.67)" in flaky
    assert flaky.count("<th>sample ") == 3
    assert flaky.count('<pre class="llm-text">&lt;script&gt;alert(1)&lt;/script&gt;</pre>') == 1
    assert page.count("Samples: 3 of 3 passed") == 2 and page.count("Samples: 2 of 3 passed") == 1


def test_llmeval_compare_pairs_cases_not_samples(sampled, capsys):
    """Two repeated runs: compare pairs each case's pass fraction (sign-flip test), not its last sample."""
    from pytest_llmeval.cli import main

    p = sampled([1.0] * 8)
    sampled.state["fail"] = lambda cid, seed: False
    p.runpytest("--model", "hot", "--repeat", "3")
    sampled.state["fail"] = lambda cid, seed: seed == 2  # every case loses its last sample
    p.runpytest("--model", "hot", "--repeat", "3")
    capsys.readouterr()
    assert main(["compare", "--db", str(p.path / "metrics.db"), "--json", "--no-html"]) == 0
    (pc,) = json.loads(capsys.readouterr().out)["pairs"]
    rate = next(m for m in pc["metrics"] if m["metric"] == "pass_rate")
    assert pc["shared"] == 8 and rate["current"] == pytest.approx(2 / 3) and rate["baseline"] == 1.0
    assert rate["p_value"] == pytest.approx(2 / 2**8)  # 8 cases each down by 1/3
    assert pc["changed"] == []  # 2 of 3 still pass each case under the default policy


def test_a_model_call_that_fails_makes_the_item_an_error_with_all_its_samples_recorded(sampled):
    p = sampled([1.0, 1.0], max_retries=0)
    sampled.srv.fault_rate, sampled.srv.faults = 1.0, ("500",)
    r = p.runpytest("--model", "hot", "--repeat", "3")
    r.assert_outcomes(errors=2)
    recs = _records(p, r)
    assert len(recs) == 6 and {(x["outcome"], x["samples"]) for x in recs} == {("error", 3)}
    assert sorted(x["sample"] for x in recs) == [0, 0, 1, 1, 2, 2]
    assert all("500" in (x["error"] or "") for x in recs)


def test_a_repeated_item_that_fails_reports_its_samples_in_a_few_lines(sampled):
    """Like a single-sample item's (issue 23): the verdict and its policy, each failed sample's failing
    score, the head of one output; no exception class, no 'traceback entries are hidden' line."""
    p = sampled([1.0, 1.0])
    sampled.state["fail"] = lambda cid, seed: cid == "c01" and seed != 1
    r = p.runpytest("--model", "hot", "--repeat", "3", "-p", "no:randomly")
    r.assert_outcomes(passed=1, failed=1)
    start = next(i for i, ln in enumerate(r.outlines) if ln.startswith("_") and "test_s[hot-c01]" in ln)
    end = next(i for i in range(start + 1, len(r.outlines)) if r.outlines[i].startswith(("_", "=")))
    block = r.outlines[start + 1 : end]
    assert block == [
        "case c01 [hot] · cases.jsonl:2 · 1 of 3 samples passed (majority)",
        "  sample 0: exact_match = 0.000 (needs >= 1): expected 'yes', got 'no'",
        "  sample 2: exact_match = 0.000 (needs >= 1): expected 'yes', got 'no'",
        "  output (sample 0): no",
    ], "\n".join(block)
    r.stdout.fnmatch_lines(["FAILED test_eval.py::test_s[[]hot-c01[]] - 1 of 3 samples passed: sample 0: *"])
    # The traceback on request, as for any item.
    long = p.runpytest("--model", "hot", "--repeat", "3", "-p", "no:randomly", "--tb=long")
    assert (
        "SamplesFailed: 1 of 3 samples passed; --repeat-policy majority needs more than half"
        in long.stdout.str()
    )
