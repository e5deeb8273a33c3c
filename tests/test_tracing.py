"""OpenTelemetry spans: in memory, from a real run, over OTLP/HTTP to a loopback collector, and free when off."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _fake_openai import RUN_ARGS, FakeOpenAIServer, answer, write_suite  # noqa: E402

from pytest_llmeval import tracing  # noqa: E402
from pytest_llmeval.gate import Verdict  # noqa: E402
from pytest_llmeval.outcome import RunOutcome  # noqa: E402
from pytest_llmeval.results import CaseResult  # noqa: E402

pytest_plugins = ["pytester"]


def rec(case_id: str, outcome: str = "passed", **kw: Any) -> CaseResult:
    base: dict[str, Any] = {
        "nodeid": f"t.py::test_q[m-{case_id}]",
        "test": "t.py::test_q",
        "model": "m",
        "case_id": case_id,
        "outcome": outcome,
        "passed": outcome == "passed",
        "scores": [
            {
                "name": "exact_match",
                "value": 1.0 if outcome == "passed" else 0.0,
                "passed": outcome == "passed",
                "threshold": 1.0,
                "explanation": "" if outcome == "passed" else "expected 'X', got 'the output'",
            }
        ],
        "latency_s": 0.25,
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "cost": 0.001,
        "finish_reason": "stop",
        "output": "the output",
        "messages": [{"role": "user", "content": "the prompt"}],
    }
    base.update(kw)
    return CaseResult(**base)


@pytest.fixture
def memory():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    return InMemorySpanExporter()


def by_name(spans: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


def test_spans_in_memory(memory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tracing.CAPTURE_ENV, raising=False)
    tr = tracing.Tracer(memory, batch=False)
    tr.item(rec("a"))
    tr.item(rec("b", "failed", cached=True, retries=2))
    tr.item(rec("c", "error", latency_s=None, scores=[], error="model call failed: boom", output=None))
    outcome = RunOutcome(
        run_id="r1",
        started=0.0,
        ended=1.0,
        models=("m",),
        model_specs={},
        datasets={},
        records=(rec("a"), rec("b", "failed"), rec("c", "error")),
        verdict=Verdict(passed=False),
    )
    tr.shutdown(outcome)
    tr.shutdown(outcome)  # idempotent
    tr.item(rec("late"))  # after shutdown: ignored, no error

    spans = by_name(memory.get_finished_spans())
    (run,) = spans["llmeval.run"]
    assert run.attributes["llmeval.run_id"] == "r1" and run.attributes["llmeval.gate.passed"] is False
    assert run.attributes["llmeval.errors"] == 1 and run.status.status_code.name == "ERROR"
    items = {s.attributes["llmeval.case_id"]: s for s in spans["llmeval.item"]}
    assert sorted(items) == ["a", "b", "c"]
    assert all(s.parent.span_id == run.context.span_id for s in items.values())
    assert all(s.context.trace_id == run.context.trace_id for s in items.values())
    a = items["a"]
    assert a.attributes["llmeval.test"] == "t.py::test_q" and a.attributes["llmeval.model"] == "m"
    assert a.attributes["llmeval.outcome"] == "passed" and a.attributes["llmeval.score.exact_match"] == 1.0
    assert items["b"].attributes["llmeval.outcome"] == "failed"
    assert items["c"].status.status_code.name == "ERROR" and "llmeval.error" not in items["c"].attributes

    chats = {s.parent.span_id: s for s in spans["chat m"]}
    assert len(chats) == 2 and items["c"].context.span_id not in chats  # no call, no chat span
    chat = chats[a.context.span_id]
    assert chat.kind.name == "CLIENT"
    attrs = chat.attributes
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "m"
    assert attrs["gen_ai.usage.input_tokens"] == 12 and attrs["gen_ai.usage.output_tokens"] == 3
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)
    assert attrs["llmeval.latency_s"] == 0.25
    assert chat.end_time - chat.start_time == pytest.approx(0.25e9, rel=0.01)
    assert chat.start_time >= a.start_time and chat.end_time <= a.end_time
    assert chats[items["b"].context.span_id].attributes["llmeval.cached"] is True
    (event,) = chat.events
    assert event.name == "gen_ai.evaluation.result"
    assert event.attributes["gen_ai.evaluation.name"] == "exact_match"
    assert event.attributes["gen_ai.evaluation.score.value"] == 1.0
    assert event.attributes["gen_ai.evaluation.score.label"] == "pass"
    # Off by default: no prompt, output or output-quoting explanation.
    for s in memory.get_finished_spans():
        text = s.to_json()
        assert "the prompt" not in text and "the output" not in text and "gen_ai.input.messages" not in text


def test_content_only_when_opted_in_and_redacted(memory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tracing.CAPTURE_ENV, "true")
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok-0123456789abcdef")
    tr = tracing.Tracer(memory, batch=False)
    tr.item(
        rec(
            "a",
            "failed",
            output="leaked tok-0123456789abcdef and sk-abcdefghijklmnop",
            messages=[{"role": "user", "content": "use tok-0123456789abcdef"}],
            error="expected 'X', got 'leaked tok-0123456789abcdef'",
        )
    )
    tr.shutdown()
    spans = by_name(memory.get_finished_spans())
    (chat,) = spans["chat m"]
    inp = json.loads(chat.attributes["gen_ai.input.messages"])
    out = json.loads(chat.attributes["gen_ai.output.messages"])
    assert inp == [{"role": "user", "parts": [{"type": "text", "content": "use [REDACTED]"}]}]
    assert out[0]["role"] == "assistant" and out[0]["finish_reason"] == "stop"
    assert out[0]["parts"][0]["content"] == "leaked [REDACTED] and [REDACTED]"
    assert "explanation" in json.dumps([dict(e.attributes) for e in chat.events])
    (item,) = spans["llmeval.item"]
    assert "[REDACTED]" in item.attributes["llmeval.error"]
    for s in memory.get_finished_spans():
        assert "tok-0123456789abcdef" not in s.to_json() and "sk-abcdefghijklmnop" not in s.to_json()


def test_spans_from_a_real_run(
    pytester: pytest.Pytester, memory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracing.Tracer, "from_env", classmethod(lambda cls: cls(memory, batch=False)))
    with FakeOpenAIServer() as srv:
        write_suite(pytester.path, srv.base_url, [("a", "A"), ("b", "B")])
        pytester.runpytest(*RUN_ARGS, "--otel").assert_outcomes(passed=2)
    spans = by_name(memory.get_finished_spans())
    assert len(spans["llmeval.item"]) == 2 and len(spans["chat fake"]) == 2
    (run,) = spans["llmeval.run"]  # ended by the metrics store's finish
    assert run.attributes["llmeval.passed"] == 2 and run.attributes["llmeval.models"] == ("fake",)
    assert {s.attributes["llmeval.case_id"] for s in spans["llmeval.item"]} == {"a", "b"}


class Collector:
    """A loopback OTLP/HTTP endpoint that keeps the protobuf bodies POSTed to /v1/traces."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.got = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                enc = self.headers.get("Content-Encoding", "")
                if enc == "gzip":
                    body = gzip.decompress(body)
                elif enc == "deflate":
                    body = zlib.decompress(body)
                if self.path == "/v1/traces":
                    outer.bodies.append(body)
                    outer.got.set()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def spans(self) -> list[Any]:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        out = []
        for body in self.bodies:
            req = ExportTraceServiceRequest()
            req.ParseFromString(body)
            for rs in req.resource_spans:
                resource = {a.key: a.value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for sp in ss.spans:
                        out.append((resource, sp))
        return out

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind)


def test_spans_reach_an_otlp_http_endpoint(pytester: pytest.Pytester) -> None:
    collector = Collector()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(ENABLE_OTEL="true", OTEL_EXPORTER_OTLP_ENDPOINT=collector.url, OTEL_SERVICE_NAME="evals-ci")
    try:
        with FakeOpenAIServer(answer(lambda prompt: "A")) as srv:
            write_suite(pytester.path, srv.base_url, [("a", "A"), ("b", "B")])
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", *RUN_ARGS],
                cwd=pytester.path,
                env=env,
                capture_output=True,
                text=True,
            )
        assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert collector.got.wait(10)
        spans = collector.spans()
    finally:
        collector.close()
    names = sorted(sp.name for _, sp in spans)
    assert names == ["chat fake", "chat fake", "llmeval.item", "llmeval.item", "llmeval.run"]
    resource = spans[0][0]
    assert _value(resource["service.name"]) == "evals-ci"
    items = {}
    for _, sp in spans:
        attrs = {a.key: _value(a.value) for a in sp.attributes}
        if sp.name == "llmeval.item":
            items[attrs["llmeval.case_id"]] = (sp, attrs)
    assert items["a"][1]["llmeval.outcome"] == "passed" and items["b"][1]["llmeval.outcome"] == "failed"
    chats = [
        (sp, {a.key: _value(a.value) for a in sp.attributes}) for _, sp in spans if sp.name == "chat fake"
    ]
    for sp, attrs in chats:
        assert sp.kind == sp.SPAN_KIND_CLIENT
        assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "fake"
        assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] == 1
        assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
        (event,) = sp.events
        ev = {a.key: _value(a.value) for a in event.attributes}
        assert event.name == "gen_ai.evaluation.result" and ev["gen_ai.evaluation.name"] == "exact_match"
        assert ev["gen_ai.evaluation.score.value"] in (0.0, 1.0)
    parents = {bytes(sp.parent_span_id) for sp, _ in chats}
    assert parents == {bytes(items["a"][0].span_id), bytes(items["b"][0].span_id)}


def test_tracing_is_free_when_off(pytester: pytest.Pytester) -> None:
    """Without --otel / ENABLE_OTEL, a run never imports opentelemetry."""
    env = {k: v for k, v in os.environ.items() if k != "ENABLE_OTEL"}
    with FakeOpenAIServer() as srv:
        write_suite(pytester.path, srv.base_url, [("a", "A")])
        pytester.makepyfile(
            test_zz_last="""
            import sys

            def test_no_opentelemetry_loaded():
                assert not [m for m in sys.modules if m.startswith("opentelemetry")]
            """
        )
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", *RUN_ARGS, "-p", "no:randomly"],
            cwd=pytester.path,
            env=env,
            capture_output=True,
            text=True,
        )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "2 passed" in proc.stdout


def test_missing_sdk_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(pytest.UsageError, match=r"pytest-llmeval\[otel\]"):
        tracing.Tracer.from_env()
