"""Verdicts you can trust (issue 19): the cache key, secrets, bounded outputs, fail-fast, retries, latency, charts.

The fault-driven tests run real pytest sessions against loopback servers that speak
the OpenAI chat-completions wire format (``tests/fakes.py``): two servers answering
to one model name, a key-checking server that echoes the key it got, 5xx/429
storms, HTTP 200s without an answer, megabyte replies, a port where nothing
listens. The latency test runs the embedded SmolLM2 for real.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeOpenAIServer, big_reply
from test_tracing import _closed_port as closed_port

from pytest_llmeval import cli, redact
from pytest_llmeval.backends.hf import HFSpec
from pytest_llmeval.model_checks import adapter_identity, path_fingerprint
from pytest_llmeval.models import known_models

REPO = Path(__file__).resolve().parents[1]
TEST_FILE = (
    "from pytest_llmeval import dataset, scorers\n\n"
    "@dataset('cases.jsonl', max_tokens=16)\n"
    "def test_x(case, completion):\n"
    "    scorers.exact_match(completion.text, case['expected'])\n"
)


def _model(name: str, base_url: str, **extra: Any) -> str:
    lines = [f"  {name}:", "    type: openai", "    model: fake", f"    base_url: {base_url}"]
    lines += [f"    {k}: {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def _project(p: pytest.Pytester, models: str, n: int, ini: str = "") -> pytest.Pytester:
    """models.yaml (the given entries), ``n`` cases that pass when echoed, one test, an ini."""
    p.path.joinpath("models.yaml").write_text("models:\n" + models)
    rows = [json.dumps({"id": f"c{i:03d}", "prompt": f"w{i}", "expected": f"w{i}"}) for i in range(n)]
    p.path.joinpath("cases.jsonl").write_text("\n".join(rows) + "\n")
    p.makeini(
        "[pytest]\nllmeval_models_file = models.yaml\nllmeval_cache_path = cache.sqlite\n"
        "llmeval_metrics_db = metrics.db\nllmeval_runs_dir = runs\n" + ini
    )
    p.makepyfile(test_eval=TEST_FILE)
    return p


def _rows(db: Path, sql: str, *params: Any) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def _latest_run_dir(root: Path) -> Path:
    return max((root / "runs").iterdir(), key=lambda d: d.stat().st_mtime)


def _traced_pytest(root: Path, collector: Any, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A pytest process in ``root`` that sends its spans, prompts and outputs included, to ``collector``."""
    from test_tracing import _otel_env

    env = _otel_env(
        OTEL_ENDPOINT=collector.url,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        LLMEVAL_OTEL_CAPTURE_CONTENT="true",
        **env,
    )
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "--model",
        "fake",
        "--junitxml=junit.xml",
        "-p",
        "no:randomly",
        *args,
    ]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=180)


# -- 1. the cache key covers the endpoint -------------------------------------------------------------
def test_two_endpoints_with_one_model_name_never_share_cached_answers(pytester: pytest.Pytester, capsys):
    """Server A answers right, server B wrong, both as model ``fake``: two runs of each, 0 cross hits."""
    n = 6
    with FakeOpenAIServer() as good, FakeOpenAIServer(lambda m, b: "nope") as bad:
        url_a, url_b = good.base_url, bad.base_url
        p = _project(pytester, _model("a", url_a) + _model("b", url_b), n)
        outcomes = []
        for _ in range(2):
            for name in ("a", "b"):
                r = p.runpytest("--model", name, "-p", "no:randomly")
                outcomes.append((name, r.parseoutcomes(), r))
        sent = {"a": good.completed, "b": bad.completed}
    (a1, b1, a2, b2) = outcomes
    assert a1[1].get("passed") == n and a2[1].get("passed") == n
    # B's first run asked B (on main it replayed A's answers: 6 passed, 0 requests to B).
    assert b1[1].get("failed") == n and b2[1].get("failed") == n
    assert sent == {"a": n, "b": n}  # each server was asked once per case, over two runs each
    # The second runs came from the cache, each from its own endpoint's entries.
    a2[2].stdout.fnmatch_lines([f"*({n}/{n} cached)*"])
    b2[2].stdout.fnmatch_lines([f"*({n}/{n} cached)*"])
    recs = [r for d in (p.path / "runs").iterdir() for r in _records(d) if r["model"] == "b"]
    assert len(recs) == 2 * n and {r["output"] for r in recs} == {"nope"}
    cross_hits = sum(1 for r in recs if r["cached"] and r["output"] != "nope")
    assert cross_hits == 0
    # B's first run says why its misses were misses.
    b1[2].stdout.fnmatch_lines(
        [
            f"*cache: {n} miss(es) had the same request cached for another model identity, e.g. b: "
            f"same request cached for another model identity: endpoint {url_a} in the cache, {url_b} now*"
        ]
    )
    print(f"two endpoints, same model name: cross-endpoint cache hits over two runs = {cross_hits}")

    # llmeval cache explain shows the key's parts and the other endpoint's entry.
    db, cache = str(p.path / "metrics.db"), str(p.path / "cache.sqlite")
    capsys.readouterr()
    args = ["cache", "explain", "test_eval.py::test_x[b-c001]", "--db", db, "--cache-path", cache]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "test_eval.py::test_x[b-c001] in run" in out and "cache      hit in that run" in out
    assert f"endpoint={url_b}" in out and "served_model=fake" in out
    assert "recomputed from the recorded prompt: matches" in out
    assert 'params     {"max_tokens": 16}' in out
    assert f"also       same request cached for another model identity: endpoint {url_a}" in out
    # The first B run, which missed: the reason is in its record.
    assert cli.main([*args, "--run", "latest~2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "miss" and doc["cache"]["holds_key"] is True
    assert doc["note"].startswith(f"same request cached for another model identity: endpoint {url_a}")


def test_remote_identity_normalises_the_endpoint_and_local_identities_are_unchanged(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    specs = known_models(REPO / "evals" / "models.yaml")  # smollm2 and smollm2-vllm are built in
    # Local models keep the identity of every cache entry written so far, byte for byte.
    hf = specs["smollm2"]
    assert isinstance(hf, HFSpec)
    base = {
        "type": "hf",
        "path": "embedded:smollm2",
        "model": None,
        "path_fp": path_fingerprint("embedded:smollm2"),
    }
    base.update(load_in_4bit=False, dtype="float32")
    assert hf.identity() == json.dumps(base, sort_keys=True)
    lora = {**base, "adapter": adapter_identity("data/lora_adapters/json_v1")}
    assert specs["smollm2-json-lora"].identity() == json.dumps(lora, sort_keys=True)
    vllm = {
        "type": "vllm_server",
        "path": None,
        "model": "embedded:smollm2",
        "model_fp": "embedded:smollm2:smollm2",
    }
    assert specs["smollm2-vllm"].identity() == json.dumps(vllm, sort_keys=True)
    vllm_lora = {**vllm, "adapter": adapter_identity("data/lora_adapters/json_v1")}
    assert specs["smollm2-vllm-json-lora"].identity() == json.dumps(vllm_lora, sort_keys=True)
    # Remote models: spellings of one endpoint agree, other endpoints differ, credentials never appear.
    from pytest_llmeval.models import parse_models

    def ident(**kw: Any) -> dict[str, Any]:
        (spec,) = parse_models({"models": {"m": {"type": "openai", "model": "x", **kw}}}).values()
        return json.loads(spec.identity())

    assert ident(base_url="HTTP://Host.Example:80/v1/")["endpoint"] == "http://host.example/v1"
    assert (
        ident(base_url="http://u:pw-123456@host.example:8000/v1")["endpoint"] == "http://host.example:8000/v1"
    )
    assert ident()["endpoint"] == "https://api.openai.com/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://proxy.local/v1")  # the SDK's own default
    assert ident()["endpoint"] == "http://proxy.local/v1"
    (served,) = parse_models(
        {
            "models": {
                "s": {
                    "type": "vllm_server",
                    "model": "base",
                    "base_url": "http://h:8000",
                    "adapters": {"j": "/nonexistent"},
                    "adapter": "j",
                }
            }
        }
    ).values()
    assert json.loads(served.identity())["endpoint"] == "http://h:8000/v1"
    assert json.loads(served.identity())["served_model"] == "j"


@pytest.mark.parametrize("fault", ["500", "empty_choices"])
def test_errors_are_never_cached(pytester: pytest.Pytester, fault: str):
    n = 3
    with FakeOpenAIServer(faults=(fault,), fail_first=n) as srv:
        p = _project(pytester, _model("fake", srv.base_url, max_retries=0), n)
        first = p.runpytest("--model", "fake")
        first.assert_outcomes(errors=n)
        assert _rows(p.path / "cache.sqlite", "SELECT count(*) FROM responses") == [(0,)]
        second = p.runpytest("--model", "fake")
        second.assert_outcomes(passed=n)
        assert len(srv.requests) == 2 * n  # the second run asked again
    second.stdout.fnmatch_lines([f"*(0/{n} cached)*"])


# -- 2. every key the models file points at is scrubbed -------------------------------------------------
CANARY = "cnry-" + "7f3a9b2c4d5e6f708192a3b4c5d6e7f8"


def test_a_key_under_any_variable_name_appears_in_no_output(pytester: pytest.Pytester):
    """The key of ``api_key_env: LLM_ACCESS_CRED`` (no KEY/TOKEN/SECRET in the name, no sk- prefix)."""
    from test_tracing import HttpCollector

    collector = HttpCollector()

    def leaky(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
        return CANARY if messages[-1]["content"] == "w0" else str(messages[-1]["content"])

    try:
        with FakeOpenAIServer(leaky, api_key=CANARY, echo_auth=True) as srv:
            p = _project(pytester, _model("fake", srv.base_url, api_key_env="LLM_ACCESS_CRED"), 3)
            args = ("-o", "junit_family=xunit1", "-rA", "--log-level=DEBUG", "--output", "run")
            proc = _traced_pytest(p.path, collector, *args, LLM_ACCESS_CRED=CANARY)
            sent = [h.get("Authorization") or h.get("authorization") for h in srv.headers]
        assert collector.got.wait(10)
    finally:
        collector.close()
    assert sent and all(s == f"Bearer {CANARY}" for s in sent)  # the key was in play
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    texts = {"stdout": proc.stdout, "stderr": proc.stderr}
    files = [
        p.path / "junit.xml",
        *(p.path / "run").rglob("*"),
        *p.path.glob("metrics.db*"),
        *p.path.glob("cache.sqlite*"),
    ]
    for f in files:
        if f.is_file():
            texts[f.name] = f.read_bytes().decode("utf-8", "replace")
    assert {"junit.xml", "report.html", "results.jsonl", "summary.json", "metrics.db", "cache.sqlite"} <= set(
        texts
    )
    texts["otlp"] = b"".join(collector.bodies).decode("utf-8", "replace")
    found = {where: text.count(CANARY) for where, text in texts.items()}
    print(f"canary occurrences per output: {found}")
    assert sum(found.values()) == 0, found
    assert "Authorization: [REDACTED])" in texts["results.jsonl"]  # scrubbed, and the ")" after it kept
    assert "[REDACTED]" in texts["stdout"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "model m: 401 Authorization: Bearer sk-abcdefghijkl1234 after 4 retries",
            "model m: 401 Authorization: [REDACTED] after 4 retries",  # on main a second pass ate "after"
        ),
        (
            "headers {'Authorization': 'Basic dXNlcjpwYXNzd29yZA==', 'x': 1} then more",
            "headers {'Authorization': '[REDACTED]', 'x': 1} then more",
        ),
        ("authorization=abcdefghijk next word", "authorization=[REDACTED] next word"),
        ("api_key: abcdefgh1234 and the rest", "api_key: [REDACTED] and the rest"),
        (
            "(you sent Authorization: Bearer abcdefghijkl1234) fine",
            "(you sent Authorization: [REDACTED]) fine",
        ),
    ],
)
def test_redaction_is_idempotent_and_eats_no_neighbouring_word(text: str, expected: str):
    once = redact.redact(text)
    assert once == expected
    assert redact.redact(once) == once and redact.redact(redact.redact(once)) == once


# -- 3. bounded outputs ------------------------------------------------------------------------------------
def test_huge_outputs_are_cut_once_everywhere_with_their_size(pytester: pytest.Pytester):
    size, n, limit = 1_000_000, 3, 64 * 1024
    from test_tracing import HttpCollector, _decode, _value

    collector = HttpCollector()
    try:
        with FakeOpenAIServer(big_reply(size)) as srv:
            p = _project(pytester, _model("fake", srv.base_url), n)
            proc = _traced_pytest(p.path, collector)
            assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
            assert collector.got.wait(10)
            run_dir = _latest_run_dir(p.path)
            marker = f"[output cut by pytest-llmeval: {size:,} bytes in all]"
            recs = _records(run_dir)
            assert len(recs) == n
            for rec in recs:
                assert len(rec["output"].encode()) <= limit and rec["output"].endswith(marker)
                assert rec["extra"]["output_bytes"] == size
            # Every file holds at most the bound per output (plus what surrounds it).
            for name in ("junit.xml",):
                assert (p.path / name).stat().st_size < n * limit * 1.5, name
            for name in ("results.jsonl", "report.html"):
                assert (run_dir / name).stat().st_size < n * limit * 2.5, name
            db_rows = _rows(
                p.path / "metrics.db", "SELECT length(CAST(output AS BLOB)), output_truncated FROM results"
            )
            assert all(b <= limit and cut == 1 for b, cut in db_rows), db_rows
            cached = _rows(p.path / "cache.sqlite", "SELECT length(CAST(text AS BLOB)) FROM responses")
            assert len(cached) == n and all(b <= limit for (b,) in cached)
            outputs = [
                json.loads(_value(a.value))[0]["parts"][0]["content"]
                for _, sp in _decode(collector.bodies)
                for a in sp.attributes
                if a.key == "gen_ai.output.messages"
            ]
            assert len(outputs) == n and all(len(o.encode()) <= limit and o.endswith(marker) for o in outputs)
            # A larger bound is not served from entries cut at a smaller one: they are generated again.
            asked = len(srv.requests)
            r = pytester.runpytest("--model", "fake", "--output-limit", "128KiB", "-p", "no:randomly")
            r.assert_outcomes(failed=n)
            assert len(srv.requests) == asked + n
            rec = _records(_latest_run_dir(p.path))[0]
            assert (
                64 * 1024 < len(rec["output"].encode()) <= 128 * 1024
                and rec["extra"]["output_limit"] == 128 * 1024
            )
    finally:
        collector.close()


def test_a_bad_output_limit_is_a_usage_error(pytester: pytest.Pytester):
    p = _project(pytester, _model("fake", "http://127.0.0.1:9/v1"), 1)
    r = p.runpytest("--model", "fake", "--output-limit", "lots")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(
        ["*--output-limit: expected a size such as 65536, 64KiB, 1MiB or none, got 'lots'*"]
    )


# -- 4. fail fast ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["option", "ini"])
@pytest.mark.parametrize("where", ["refused", "dns"])
def test_a_server_that_cannot_be_reached_ends_the_session_with_one_message(
    pytester: pytest.Pytester, how: str, where: str
):
    url = (
        f"http://127.0.0.1:{closed_port()}/v1" if where == "refused" else "http://llmeval-nowhere.invalid/v1"
    )
    p = _project(
        pytester, _model("fake", url, max_retries=2), 20, ini="llmeval_model = fake\n" if how == "ini" else ""
    )
    # A process of its own, as a user's run is: in a long-lived xdist worker that had already run many
    # in-process sessions this run once waited forever (not understood yet; see the session note).
    r = p.runpytest_subprocess(*(["--model", "fake"] if how == "option" else []), timeout=120)
    out = r.stdout.str() + r.stderr.str()
    assert r.ret == pytest.ExitCode.USAGE_ERROR, out[-3000:]
    cause = "connection refused" if where == "refused" else "DNS lookup failed"
    assert out.count(cause) == 1, out[-3000:]
    assert f"model 'fake' at {url}: {cause}" in out
    assert "ERROR test_eval.py" not in out and not list(p.path.glob("runs/*"))  # nothing recorded


def test_with_xdist_a_dead_server_interrupts_the_session_at_each_workers_first_item(
    pytester: pytest.Pytester,
):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    p = _project(pytester, _model("fake", url, max_retries=2), 20)
    r = p.runpytest("--model", "fake", "-n", "2")
    assert r.ret == pytest.ExitCode.INTERRUPTED
    r.assert_outcomes(errors=2)  # one per worker, not one per item
    r.stdout.fnmatch_lines(
        [f"*Interrupted: llmeval: preflight failed: model 'fake' at {url}: connection refused*"]
    )
    r.stdout.fnmatch_lines(["*| retries 0"])  # no request was retried: none was sent


def test_a_refused_key_and_a_missing_key_end_the_session(pytester: pytest.Pytester, monkeypatch):
    monkeypatch.setenv("ACCESS_CRED", "wrong-credential-0123456789")
    monkeypatch.delenv("UNSET_CRED", raising=False)
    with FakeOpenAIServer(api_key="right-credential-0123456789") as srv:
        p = _project(
            pytester, _model("fake", srv.base_url, api_key_env="ACCESS_CRED"), 5, ini="llmeval_model = fake\n"
        )
        r = p.runpytest()
        out = r.stdout.str() + r.stderr.str()
        assert r.ret == pytest.ExitCode.USAGE_ERROR
        assert f"model 'fake' at {srv.base_url}: HTTP 401 Incorrect API key provided: [REDACTED]" in out
        assert "wrong-credential" not in out and srv.requests == []
        p.path.joinpath("models.yaml").write_text(
            "models:\n" + _model("fake", srv.base_url, api_key_env="UNSET_CRED")
        )
        r = p.runpytest()  # chosen by the ini key, not --model: the same single message
        out = r.stdout.str() + r.stderr.str()
        assert r.ret == pytest.ExitCode.USAGE_ERROR
        assert out.count("needs UNSET_CRED") == 1 and "ERROR test_eval.py" not in out


def test_transient_statuses_still_retry_and_a_cached_run_needs_no_server(pytester: pytest.Pytester):
    with FakeOpenAIServer(faults=("503",), fail_first=2) as srv:
        p = _project(pytester, _model("fake", srv.base_url, max_retries=3), 2)
        r = p.runpytest("--model", "fake")
        r.assert_outcomes(passed=2)
        r.stdout.fnmatch_lines(["*retries 2*"])
    r = p.runpytest("--model", "fake")  # the server is gone; every answer is in the cache
    r.assert_outcomes(passed=2)


# -- 5. retries and errors ---------------------------------------------------------------------------------
def test_items_that_end_in_error_keep_their_retries_and_causes(pytester: pytest.Pytester):
    n, retries = 4, 2
    with FakeOpenAIServer(faults=("429", "503"), fault_rate=1.0, retry_after=0.01, seed=3) as srv:
        p = _project(pytester, _model("fake", srv.base_url, max_retries=retries), n)
        r = p.runpytest("--model", "fake")
        r.assert_outcomes(errors=n)
        asked = len(srv.requests)
    assert asked == n * (retries + 1)
    rows = _rows(p.path / "metrics.db", "SELECT retries, error FROM results")
    assert [rt for rt, _ in rows] == [retries] * n
    assert all(f"after {retries} retries; earlier: " in err for _, err in rows)
    (stats,) = _rows(p.path / "metrics.db", "SELECT stats FROM runs")
    assert json.loads(stats[0])["retries"] == n * retries
    r.stdout.fnmatch_lines([f"*retries {n * retries}*"])  # the per-test summary counts them all
    rec = _records(_latest_run_dir(p.path))[0]
    assert len(rec["extra"]["retry_causes"]) == retries + 1
    assert all(
        re.match(r"(RateLimitError|InternalServerError): Error code: (429|503)", c)
        for c in rec["extra"]["retry_causes"]
    )


@pytest.mark.parametrize("fault", ["empty_choices", "no_message"])
def test_an_http_200_without_an_answer_is_retried(pytester: pytest.Pytester, fault: str):
    with FakeOpenAIServer(faults=(fault,), fail_first=2) as srv:
        p = _project(pytester, _model("fake", srv.base_url, max_retries=2, max_concurrency=1), 2)
        r = p.runpytest("--model", "fake", "-p", "no:randomly")
    r.assert_outcomes(passed=2)
    assert sorted(rt for (rt,) in _rows(p.path / "metrics.db", "SELECT retries FROM results")) == [0, 2]


def test_an_xdist_run_records_its_generation_stats(pytester: pytest.Pytester):
    with FakeOpenAIServer() as srv:
        p = _project(pytester, _model("fake", srv.base_url), 6)
        r = p.runpytest("--model", "fake", "-n", "2")
    r.assert_outcomes(passed=6)
    (stats,) = _rows(p.path / "metrics.db", "SELECT stats FROM runs")
    assert stats[0] is not None
    st = json.loads(stats[0])
    assert st["submitted"] == 6 and st["done"] == 6 and st["cached"] == 0
    r.stdout.fnmatch_lines(["generation: 6 completions (0 from cache), 0 retries*"])


# -- 6. latency means what it says -----------------------------------------------------------------------
LATENCY_CASES = [  # SmolLM2 ends the second one after 12 tokens; the others run to max_tokens
    {"id": "colours", "prompt": "Name three colours.", "expected": "x"},
    {"id": "count", "prompt": "Count from one to fifty in words, separated by commas.", "expected": "x"},
    {"id": "yes", "prompt": "Reply with the single word: yes", "expected": "yes"},
]


@pytest.mark.slow
def test_an_in_process_batch_records_time_to_last_token_not_a_shared_latency(pytester: pytest.Pytester):
    """SmolLM2 in one batch: each item gets its own time to last token; no item claims a request latency."""
    pytester.path.joinpath("models.yaml").write_text(
        "models:\n  smollm2:\n    type: hf\n    path: embedded:smollm2\n    batch_size: 8\n"
    )
    pytester.path.joinpath("cases.jsonl").write_text("".join(json.dumps(c) + "\n" for c in LATENCY_CASES))
    pytester.makeini(
        "[pytest]\nllmeval_models_file = models.yaml\nllmeval_cache_path = cache.sqlite\n"
        "llmeval_metrics_db = metrics.db\nllmeval_runs_dir = runs\n"
    )
    pytester.makepyfile(
        test_eval="from pytest_llmeval import dataset, scorers\n\n"
        "@dataset('cases.jsonl', max_tokens=16)\n"
        "def test_x(case, completion):\n"
        "    scorers.contains(completion.text, case['expected'], at_least=0.0)\n"
    )
    r = pytester.runpytest_subprocess(
        "--model", "smollm2", "--save-baseline", "baseline.json", "-p", "no:randomly"
    )
    assert r.ret == 0, r.stdout.str()[-3000:]
    recs = {x["case_id"]: x for x in _records(_latest_run_dir(pytester.path))}
    ttlt = {c: x["extra"]["time_to_last_token_s"] for c, x in recs.items()}
    assert all(x["latency_s"] is None and x["extra"]["batch_size"] == 3 for x in recs.values())
    # On main every item of the batch had the batch's wall time. Here an item that stops early
    # (end of sequence) finishes before one that runs to max_tokens, and equal lengths tie.
    steps = {c: x["completion_tokens"] + (x["finish_reason"] == "stop") for c, x in recs.items()}
    assert len(set(steps.values())) >= 2, (steps, ttlt)
    for a in recs:
        for b in recs:
            if steps[a] < steps[b]:
                assert ttlt[a] < ttlt[b], (steps, ttlt)
            if steps[a] == steps[b]:
                assert ttlt[a] == ttlt[b], (steps, ttlt)
    assert all(x["extra"]["s_per_token"] > 0 for x in recs.values())
    r.stdout.fnmatch_lines(["*time to last token (batched) p50 *s p95 *s, *ms/token*"])
    assert "latency p50" not in r.stdout.str()
    entry = json.loads((pytester.path / "baseline.json").read_text())["entries"]["test_eval.py::test_x"][
        "smollm2"
    ]
    assert entry["latency_p95"] is None and entry["time_to_last_token_p95"] == pytest.approx(
        sorted(ttlt.values())[1] + 0.9 * (max(ttlt.values()) - sorted(ttlt.values())[1]), abs=1e-5
    )
    agg = _rows(pytester.path / "metrics.db", "SELECT metric, value FROM aggregates")
    assert dict(agg)["time_to_last_token_p95"] > 0 and dict(agg)["latency_p95"] is None
    # The gate measures it under its own name only (the answers and their timing replayed from the cache).
    r = pytester.runpytest_subprocess(
        "--model",
        "smollm2",
        "--baseline",
        "baseline.json",
        "--tolerance",
        "time_to_last_token_p95:+1000%",
        "--tolerance",
        "latency_p95:+10%",
        "-p",
        "no:randomly",
    )
    r.stdout.fnmatch_lines(
        [
            "*test_x [[]smollm2[]]*time_to_last_token_p95*ok (within*",
            "*test_x [[]smollm2[]]*latency_p95*info*",
        ]
    )
    r.stdout.fnmatch_lines(["*(3/3 cached)*"])
    replayed = {
        x["case_id"]: x["extra"]["time_to_last_token_s"] for x in _records(_latest_run_dir(pytester.path))
    }
    assert replayed == ttlt


def test_aggregates_name_batch_timing_and_request_latency_apart():
    from pytest_llmeval.results import CaseResult, aggregate
    from pytest_llmeval.timing import latency_text

    def rec(cid: str, model: str, **kw: Any) -> CaseResult:
        return CaseResult(nodeid=f"t::x[{model}-{cid}]", test="t::x", model=model, case_id=cid, **kw)

    batch = [
        rec(c, "hf", extra={"batch_size": 3, "time_to_last_token_s": t, "s_per_token": t / 10})
        for c, t in (("a", 1.0), ("b", 2.0), ("c", 3.0))
    ]
    server = [rec(c, "api", latency_s=t) for c, t in (("a", 0.5), ("b", 0.7))]
    hf, api = aggregate(batch + server)
    assert hf.latency_p50 is None and hf.time_to_last_token_p50 == 2.0 and hf.time_to_last_token_p95 == 2.9
    assert hf.s_per_token_p50 == pytest.approx(0.2)
    assert api.latency_p50 == pytest.approx(0.6) and api.time_to_last_token_p50 is None
    assert latency_text(hf) == "time to last token (batched) p50 2.00s p95 2.90s, 200.0 ms/token"
    assert latency_text(api) == "latency p50 0.60s p95 0.69s"


# -- 7. the judge's 1-5 is drawn on 1-5 ---------------------------------------------------------------------
JUDGED = """\
from pytest_llmeval import dataset, scorers


@dataset("cases.jsonl", max_tokens=16, main_score="judge")
def test_judged(case, completion, judge):
    judge.score(completion.text, rubric="rubric.md", question=case["prompt"], reference=case["expected"], at_least=1)
"""


def _grade(score: int):
    def grader(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
        if "strict grader" in str(messages[0]["content"]):
            return f"SCORE: {score}\nREASONING: graded {score}."
        return str(messages[-1]["content"])

    return grader


@pytest.mark.parametrize(("grade", "fraction"), [(1, 0.0), (3, 0.5), (5, 1.0)])
def test_the_judge_mean_is_drawn_on_its_own_1_to_5_scale(
    pytester: pytest.Pytester, tmp_path: Path, grade, fraction
):
    from test_report import CHROMIUM, _Browser

    with FakeOpenAIServer(_grade(grade)) as srv:
        p = _project(pytester, _model("fake", srv.base_url) + _model("judge", srv.base_url), 2)
        p.makepyfile(test_eval=JUDGED)
        p.path.joinpath("rubric.md").write_text("Grade 1 (wrong) to 5 (right).\n")
        r = p.runpytest("--model", "fake", "--judge", "judge", "-p", "no:randomly")
    r.assert_outcomes(passed=2)
    report = _latest_run_dir(p.path) / "report.html"
    svg = re.search(r'<svg id="llm-chart-quality".*?</svg>', report.read_text(), re.S).group(0)
    widths = dict(re.findall(r'data-series="([^"]+)" x="\d+" y="\d+" width="([\d.]+)"', svg))
    assert float(widths["pass rate"]) == pytest.approx(380.0)  # 100% on 0..1
    assert float(widths["mean main score"]) == pytest.approx(380.0 * fraction)  # on main a 1.0 was full
    assert f"{grade:.3f} (scale 1-5)" in svg
    assert CHROMIUM.exists(), "headless Chromium is needed to check the drawn chart"
    with _Browser(tmp_path) as browser:
        page = browser.open(report.as_uri())
        drawn = page.eval(
            "[...document.querySelectorAll('#llm-chart-quality rect.llm-bar')]"
            ".map((b) => [b.dataset.series, b.getBBox().width])"
        )
    assert dict(drawn) == {
        "pass rate": pytest.approx(380.0),
        "mean main score": pytest.approx(380.0 * fraction),
    }
