"""pytest-benchmark guards for the harness's own hot paths.

Run:  make bench                      (saves a run under .benchmarks/)
      make bench ARGS="--benchmark-compare --benchmark-compare-fail=mean:25%"
                                      (fails when a path got 25% slower than the last saved run)

Each benchmark works on real data from evals/: a JSON-extraction case and its
expected object, a Q&A case, 2,000 case results for aggregation, a warm SQLite
response cache.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pytest_llmeval import gate, scorers
from pytest_llmeval.backends.base import Completion, Request
from pytest_llmeval.cache import ResponseCache
from pytest_llmeval.results import CaseResult, aggregate
from pytest_llmeval.scorers import _base as scoring

EVALS = Path(__file__).resolve().parents[1] / "evals"


def _first(path: Path, tag: str) -> dict:
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if tag in row.get("tags", []):
            return row
    raise LookupError(tag)


@pytest.fixture(scope="module")
def json_case() -> dict:
    return _first(EVALS / "json_extraction" / "cases.jsonl", "hard")


@pytest.fixture(scope="module")
def qa_case() -> dict:
    return _first(EVALS / "qa" / "cases.jsonl", "multi_hop")


@pytest.fixture(autouse=True)
def _collect_scores():
    store: list[dict] = []
    scoring.begin_item(store)
    yield
    scoring.end_item()


def test_json_scorers(benchmark, json_case):
    """json_valid + matches_schema + type_correctness + field_accuracy on one answer: one JSON item's scoring."""
    text = json.dumps(json_case["expected"], ensure_ascii=False)
    schema, expected = json_case["schema"], json_case["expected"]

    def score() -> float:
        data = scorers.json_valid(text)
        scorers.matches_schema(data, schema)
        scorers.type_correctness(data, schema)
        return scorers.field_accuracy(data, expected).value

    assert benchmark(score) == 1.0


def test_qa_scorers(benchmark, qa_case):
    """key_facts + faithfulness on the reference answer: one Q&A item's deterministic scoring."""
    answer = qa_case["reference"]

    def score() -> float:
        scorers.key_facts(answer, qa_case["key_facts"], at_least=0.0)
        return scorers.faithfulness(answer, qa_case["context"], extra=qa_case["question"], at_least=0.0).value

    assert benchmark(score) > 0.0


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory) -> tuple[ResponseCache, list[str]]:
    cache = ResponseCache(tmp_path_factory.mktemp("cache") / "cache.sqlite")
    keys = []
    for i in range(2000):
        key = Request.make([{"role": "user", "content": f"case {i}"}], max_tokens=64).key("smollm2@bench")
        cache.put(key, Completion(text=f'{{"n": {i}}}', latency_s=0.1, prompt_tokens=40, completion_tokens=8))
        keys.append(key)
    return cache, keys


def test_cache_lookup(benchmark, warm_cache):
    """100 look-ups in a warm 2,000-entry response cache (keys hashed from the request, as the scheduler does)."""
    cache, keys = warm_cache
    sample = random.Random(0).sample(keys, 100)

    def look() -> int:
        return sum(cache.get(k) is not None for k in sample)

    assert benchmark(look) == 100


@pytest.fixture(scope="module")
def results() -> list[CaseResult]:
    rng = random.Random(0)
    out = []
    for model in ("base", "tuned"):
        for i in range(1000):
            ok = rng.random() < (0.3 if model == "base" else 0.6)
            out.append(
                CaseResult(
                    nodeid=f"t.py::test_x[{model}-c{i}]",
                    test="t.py::test_x",
                    model=model,
                    case_id=f"c{i}",
                    tags=["easy"],
                    outcome="passed" if ok else "failed",
                    passed=ok,
                    scores=[
                        {
                            "name": "field_accuracy",
                            "value": float(ok),
                            "threshold": 1.0,
                            "passed": ok,
                            "explanation": "",
                            "aggregate": "mean",
                        }
                    ],
                    main_score="field_accuracy",
                    latency_s=rng.uniform(0.5, 2.0),
                    prompt_tokens=300,
                    completion_tokens=60,
                )
            )
    return out


def test_aggregate_and_compare_models(benchmark, results):
    """The end of a run: aggregates of 2,000 results, then tuned vs base with McNemar and bootstrap CIs."""

    def finish() -> float:
        return gate.compare_models(aggregate(results), ["base", "tuned"])[0].p_value

    assert benchmark(finish) < 0.05


def test_record_round_trip(benchmark, results):
    """A record to JSON and back: what every item pays to travel in user_properties (and over xdist)."""
    rec = results[0]
    assert benchmark(lambda: CaseResult.from_json(rec.to_json())) == rec
