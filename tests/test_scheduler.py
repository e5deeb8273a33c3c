"""Scheduling: order, batching, cache, retries, budget, cancellation, xdist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import FakeOpenAIServer, models_yaml

from pytest_llmeval.models import parse_models

RECORDER = '''
import json, os, time
from pytest_llmeval.backends.base import Backend, Completion


class Recorder(Backend):
    """Answers with the prompt and logs every batch it was given."""

    mode = "batch"

    def generate_batch(self, requests, cancelled=None):
        with open(os.environ["REC_LOG"], "a") as f:
            f.write(json.dumps([r.message_list[-1]["content"] for r in requests]) + "\\n")
        time.sleep(float(os.environ.get("REC_DELAY", "0")))
        return [
            Completion(text=r.message_list[-1]["content"], latency_s=0.01, prompt_tokens=3,
                       completion_tokens=1, cost=self.spec.cost(3, 1))
            for r in requests
        ]


def pytest_llmeval_register_backends():
    return {"recorder": Recorder}
'''


@pytest.fixture
def recorder_project(pytester, monkeypatch):
    log = pytester.path / "batches.log"
    monkeypatch.setenv("REC_LOG", str(log))

    def make(n: int, batch_size: int = 4, fail: tuple[int, ...] = (), lengths: list[int] | None = None):
        pytester.makeconftest(RECORDER)
        pytester.makefile(
            ".yaml",
            models=f"models:\n  rec:\n    type: recorder\n    batch_size: {batch_size}\n"
            "    cost_per_1k_prompt: 1.0\n    cost_per_1k_completion: 1.0\n",
        )
        rows = []
        for i in range(n):
            prompt = f"p{i:03d}" + ("x" * lengths[i] if lengths else "")
            rows.append({"id": f"c{i:03d}", "prompt": prompt, "expected": "nope" if i in fail else prompt})
        pytester.path.joinpath("cases.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        pytester.makeini(
            "[pytest]\nllmeval_models_file = models.yaml\nllmeval_cache_path = cache.sqlite\n"
            "llmeval_metrics_db = metrics.db\nllmeval_runs_dir = runs\n"
        )
        pytester.makepyfile(
            test_eval=(
                "from pytest_llmeval import dataset, scorers\n\n"
                "@dataset('cases.jsonl', max_tokens=8)\n"
                "def test_rec(case, completion):\n"
                "    scorers.exact_match(completion.text, case['expected'])\n"
            )
        )
        return pytester

    def batches() -> list[list[str]]:
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    make.batches = batches
    return make


def test_items_are_batched_and_submitted_in_order(recorder_project):
    p = recorder_project(10, batch_size=4)
    result = p.runpytest("--model", "rec", "--cache", "off", "-p", "no:randomly")
    result.assert_outcomes(passed=10)
    batches = recorder_project.batches()
    assert [len(b) for b in batches] == [4, 4, 2]
    assert batches[0][0] == "p000"  # the first item is in the first batch
    assert sorted(sum(batches, [])) == [f"p{i:03d}" for i in range(10)]


def test_batches_group_prompts_of_similar_length(recorder_project):
    # Alternate short and long prompts: a window of 8 yields one short and one long batch.
    lengths = [0, 200, 0, 200, 0, 200, 0, 200]
    p = recorder_project(8, batch_size=4, lengths=lengths)
    p.runpytest("--model", "rec", "--cache", "off").assert_outcomes(passed=8)
    batches = recorder_project.batches()
    assert len(batches) == 2
    for b in batches:
        assert len({len(x) for x in b}) == 1, b


def test_no_scheduler_runs_one_request_at_a_time(recorder_project):
    p = recorder_project(5, batch_size=4)
    p.runpytest("--model", "rec", "--cache", "off", "--no-scheduler").assert_outcomes(passed=5)
    assert [len(b) for b in recorder_project.batches()] == [1] * 5


def test_cache_hit_replays_and_refresh_regenerates(recorder_project):
    p = recorder_project(3)
    r1 = p.runpytest("--model", "rec")
    r1.assert_outcomes(passed=3)
    r1.stdout.fnmatch_lines(["*cost $0.0120 spent, $0.0000 replayed from cache (0/3 cached)*"])
    r2 = p.runpytest("--model", "rec")
    r2.assert_outcomes(passed=3)
    r2.stdout.fnmatch_lines(["*cost $0.0000 spent, $0.0120 replayed from cache (3/3 cached)*"])
    assert len(recorder_project.batches()) == 1  # nothing generated the second time
    p.runpytest("--model", "rec", "--cache", "refresh").assert_outcomes(passed=3)
    assert len(recorder_project.batches()) == 2
    p.runpytest("--model", "rec", "--cache", "off").assert_outcomes(passed=3)
    assert len(recorder_project.batches()) == 3


def test_read_only_cache_does_not_write(recorder_project):
    p = recorder_project(2)
    p.runpytest("--model", "rec", "--cache", "ro").assert_outcomes(passed=2)
    p.runpytest("--model", "rec", "--cache", "ro").assert_outcomes(passed=2)
    assert len(recorder_project.batches()) == 2


def test_cache_key_changes_when_the_adapter_changes(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "adapter_model.safetensors").write_bytes(b"weights-v1")
    spec = parse_models(
        {"models": {"m": {"type": "hf", "path": "embedded:smollm2", "adapter": str(adapter)}}}
    )["m"]
    first = spec.identity()
    assert spec.identity() == first
    (adapter / "adapter_model.safetensors").write_bytes(b"weights-v2")
    assert spec.identity() != first


def test_xdist_workers_share_the_cache(recorder_project):
    p = recorder_project(6)
    p.runpytest("--model", "rec", "-n", "2").assert_outcomes(passed=6)
    generated = sum(len(b) for b in recorder_project.batches())
    assert generated == 6
    r = p.runpytest("--model", "rec", "-n", "2")
    r.assert_outcomes(passed=6)
    r.stdout.fnmatch_lines(["*(6/6 cached)*"])
    assert sum(len(b) for b in recorder_project.batches()) == 6


def test_exitfirst_cancels_outstanding_work(recorder_project, monkeypatch):
    monkeypatch.setenv("REC_DELAY", "0.3")
    p = recorder_project(30, batch_size=1, fail=(0,))
    result = p.runpytest("--model", "rec", "--cache", "off", "-x", "-p", "no:randomly")
    result.assert_outcomes(failed=1)
    # Counted, not timed: of 30 requests, only those already in flight at the failure ran.
    assert len(recorder_project.batches()) < 10, "outstanding requests kept generating after -x"
    assert "Traceback" not in result.stdout.str().split("short test summary")[0].split("FAILURES")[0]


def test_retry_after_429_honours_retry_after(pytester):
    with FakeOpenAIServer(fail_first=2, faults=("429",), retry_after=0.4) as srv:
        pytester.makefile(".yaml", models=models_yaml(srv.base_url))
        pytester.path.joinpath("cases.jsonl").write_text('{"id": "a", "prompt": "x", "expected": "x"}\n')
        pytester.makepyfile(
            test_eval=(
                "from pytest_llmeval import dataset, scorers\n"
                "@dataset('cases.jsonl')\n"
                "def test_x(case, completion):\n"
                "    scorers.exact_match(completion.text, case['expected'])\n"
                "    assert completion.retries == 2\n"
            )
        )
        result = pytester.runpytest(
            "--model", "fake", "--models-file", "models.yaml", "--cache", "off", "--no-metrics"
        )
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(["*retries 2*"])
        assert len(srv.times) == 3
        gaps = [b - a for a, b in zip(srv.times, srv.times[1:], strict=False)]
        assert all(g >= 0.38 for g in gaps), gaps


def test_budget_stops_submitting_and_skips_the_rest(recorder_project):
    # Each call costs $0.004; the budget allows two calls (checked before each batch of 1).
    p = recorder_project(6, batch_size=1)
    result = p.runpytest(
        "--model", "rec", "--cache", "off", "--max-cost", "0.007", "-p", "no:randomly", "-rs"
    )
    result.assert_outcomes(passed=2, skipped=4)
    result.stdout.fnmatch_lines(["*budget of $0.0070 reached*"])
    result.stdout.fnmatch_lines(["*n=2 pass rate 100.0% (2 passed, 0 failed, 4 skipped)*"])


def test_estimate_cost_with_collect_only(recorder_project):
    p = recorder_project(4)
    result = p.runpytest("--model", "rec", "--collect-only", "--estimate-cost", "-q")
    result.stdout.fnmatch_lines(
        ["*llmeval cost estimate*", "*rec: 4 items, ~* prompt tokens, <= 32 completion tokens*"]
    )
    assert recorder_project.batches() == []


def test_progress_line_is_quiet_with_q(recorder_project, monkeypatch):
    monkeypatch.setenv("REC_DELAY", "0.6")
    p = recorder_project(12, batch_size=1)
    # A subprocess, so pytest captures fd 1 for real while items wait for their completions.
    loud = p.runpytest_subprocess("--model", "rec", "--cache", "off", "-o", "llmeval_progress_every=0.5")
    lines = [ln for ln in loud.stdout.lines if "[llmeval] generated" in ln]
    assert lines and all(ln.startswith("[llmeval] generated ") and "/12 (0 cached" in ln for ln in lines), (
        lines
    )
    done = [int(ln.split()[2].split("/")[0]) for ln in lines]
    assert done == sorted(set(done)), lines  # a new line only when there is progress to show
    quiet = p.runpytest_subprocess(
        "--model", "rec", "--cache", "off", "-q", "-o", "llmeval_progress_every=0.5"
    )
    assert "[llmeval] generated" not in quiet.stdout.str()


def test_server_concurrency_is_bounded(pytester):
    with FakeOpenAIServer(delay=0.2) as srv:
        pytester.makefile(".yaml", models=models_yaml(srv.base_url, max_concurrency=4))
        rows = [json.dumps({"id": f"c{i}", "prompt": str(i), "expected": str(i)}) for i in range(16)]
        Path(pytester.path, "cases.jsonl").write_text("\n".join(rows) + "\n")
        pytester.makepyfile(
            test_eval=(
                "from pytest_llmeval import dataset, scorers\n"
                "@dataset('cases.jsonl')\n"
                "def test_x(case, completion):\n"
                "    scorers.exact_match(completion.text, case['expected'])\n"
            )
        )
        r = pytester.runpytest(
            "--model", "fake", "--models-file", "models.yaml", "--cache", "off", "--no-metrics"
        )
        r.assert_outcomes(passed=16)
        # Four at once shows both halves: requests overlap (not serial) and never exceed the
        # bound. No wall-clock check: on a loaded CI machine timing says nothing.
        assert srv.max_in_flight == 4


def test_in_process_models_take_turns_on_one_device():
    """Two hf models in one process never generate at the same time on the same device."""
    import threading
    import time as _time

    import torch

    from pytest_llmeval.backends.base import Request
    from pytest_llmeval.backends.hf import HFBackend
    from pytest_llmeval.models import parse_models

    running, peak, guard = [0], [0], threading.Lock()

    class Tok:
        pad_token_id, eos_token_id = 0, 9

        def apply_chat_template(self, messages, **_):
            return [1, 2, 3]

        def decode(self, ids, **_):
            return "x" * len(ids)

    class Model:
        def generate(self, input_ids, **_):
            with guard:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            _time.sleep(0.2)
            with guard:
                running[0] -= 1
            return torch.cat([input_ids, torch.full((input_ids.shape[0], 1), 9)], dim=1)

    specs = parse_models({"models": {n: {"type": "hf", "path": "embedded:smollm2"} for n in ("a", "b")}})
    backends = []
    for name in ("a", "b"):
        b = HFBackend(specs[name])
        b.model, b.tokenizer, b.device = Model(), Tok(), "cpu"
        backends.append(b)
    req = Request.make([{"role": "user", "content": "hi"}], max_tokens=4)
    # load() resolves transformers' lazy names under a lock; these fakes skip load().
    from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList  # noqa: F401

    done: list[int] = []

    def run(b):
        done.append(len(b.generate_batch([req, req])))

    threads = [threading.Thread(target=run, args=(b,)) for b in backends for _ in range(2)]
    started = _time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert done == [2, 2, 2, 2]
    assert peak[0] == 1 and _time.monotonic() - started >= 0.8


def test_cache_get_many_spans_query_chunks(tmp_path):
    from pytest_llmeval.backends.base import Completion
    from pytest_llmeval.cache import ResponseCache

    cache = ResponseCache(tmp_path / "c.sqlite")
    for i in range(1200):
        cache.put(
            f"k{i}", Completion(text=f"t{i}", latency_s=0.5, prompt_tokens=3, completion_tokens=i, model="m")
        )
    keys = [f"k{i}" for i in range(1300)]  # 100 without an entry; three chunks of up to 500
    found = cache.get_many(keys)
    assert len(found) == 1200 and found["k1199"].text == "t1199" and found["k7"].completion_tokens == 7
    assert all(c.cached and c.latency_s == 0.5 for c in found.values())
    assert (cache.hits, cache.misses) == (1200, 100)
    assert cache.get("k5").text == "t5" and cache.get("nope") is None
    assert ResponseCache(tmp_path / "c.sqlite", mode="refresh").get_many(keys) == {}
