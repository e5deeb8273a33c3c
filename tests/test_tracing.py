"""OpenTelemetry spans: in memory, from a real run, over OTLP/HTTP to a loopback collector, and free when off."""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import subprocess
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests  # noqa: F401  (imported before pytester's in-process runs, which would leave a half-removed http.cookiejar)

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


def _decode(bodies: list[bytes]) -> list[tuple[dict[str, Any], Any]]:
    """(resource attributes, span) for every span in OTLP ExportTraceServiceRequest bodies."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    out = []
    for body in bodies:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            resource = {a.key: a.value for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    out.append((resource, sp))
    return out


class HttpCollector:
    """A loopback OTLP/HTTP endpoint that keeps the protobuf bodies POSTed to /v1/traces."""

    protocol = "http/protobuf"

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
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
                    outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                    outer.got.set()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def spans(self) -> list[Any]:
        return _decode(self.bodies)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class GrpcCollector:
    """A loopback OTLP/gRPC TraceService that keeps the request bytes as they came off the wire."""

    protocol = "grpc"

    def __init__(self, address: str = "127.0.0.1:0") -> None:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.got = threading.Event()

        def export(raw: bytes, context: Any) -> ExportTraceServiceResponse:
            self.bodies.append(raw)
            self.headers.append({k: str(v) for k, v in context.invocation_metadata()})
            self.got.set()
            return ExportTraceServiceResponse()

        # No request deserializer: the handler gets the raw bytes and _decode parses them.
        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {
                "Export": grpc.unary_unary_rpc_method_handler(
                    export, response_serializer=ExportTraceServiceResponse.SerializeToString
                )
            },
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
        port = self.server.add_insecure_port(address)
        if not port:
            raise OSError(f"cannot listen on {address}")
        self.server.start()
        self.url = f"http://{address.rsplit(':', 1)[0]}:{port}"

    def spans(self) -> list[Any]:
        return _decode(self.bodies)

    def close(self) -> None:
        self.server.stop(0)


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind)


def _otel_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != tracing.CAPTURE_ENV}
    env.update(ENABLE_OTEL="true", **extra)
    return env


def _run_suite(root: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", *RUN_ARGS, "-p", "no:randomly"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


CANARY = "cnry-otel-7d1e5b2a9c4f"


@pytest.mark.parametrize("collector_cls", [GrpcCollector, HttpCollector], ids=["grpc", "http"])
def test_spans_reach_an_otlp_endpoint(pytester: pytest.Pytester, collector_cls: type) -> None:
    """A real run exports to a real OTLP receiver on loopback, by either protocol, through OTEL_ENDPOINT."""
    collector = collector_cls()
    env = _otel_env(
        OTEL_ENDPOINT=collector.url,
        OTEL_EXPORTER_OTLP_PROTOCOL=collector.protocol,
        OTEL_EXPORTER_OTLP_HEADERS="x-llmeval-test=hello",
        OTEL_SERVICE_NAME="evals-ci",
        LLMEVAL_CANARY_API_KEY=CANARY,
        **{tracing.CAPTURE_ENV: "true"},  # prompts and outputs in the spans: the key must still not be there
    )
    try:
        with FakeOpenAIServer(answer(lambda p: f"key {CANARY}" if p == "leak" else "A")) as srv:
            write_suite(
                pytester.path,
                srv.base_url,
                [("a", "A"), ("b", "B"), ("leak", "leak")],
                api_key_env="LLMEVAL_CANARY_API_KEY",
            )
            proc = _run_suite(pytester.path, env)
        assert any(CANARY in v for h in srv.headers for v in h.values())  # the key was in play
        assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "traces could not be sent" not in proc.stdout + proc.stderr
        assert collector.got.wait(10)
        spans = collector.spans()
    finally:
        collector.close()
    assert all(h.get("x-llmeval-test") == "hello" for h in collector.headers)  # OTEL_EXPORTER_OTLP_HEADERS
    for body in collector.bodies:
        assert CANARY.encode() not in body
    names = sorted(sp.name for _, sp in spans)
    assert names == ["chat fake"] * 3 + ["llmeval.item"] * 3 + ["llmeval.run"]
    resource = spans[0][0]
    assert _value(resource["service.name"]) == "evals-ci"
    items = {}
    for _, sp in spans:
        attrs = {a.key: _value(a.value) for a in sp.attributes}
        if sp.name == "llmeval.item":
            items[attrs["llmeval.case_id"]] = (sp, attrs)
        if sp.name == "llmeval.run":
            assert attrs["llmeval.passed"] == 1 and attrs["llmeval.failed"] == 2
    assert items["a"][1]["llmeval.outcome"] == "passed" and items["b"][1]["llmeval.outcome"] == "failed"
    assert items["a"][1]["llmeval.test"] == "test_evals.py::test_answer"
    chats = [
        (sp, {a.key: _value(a.value) for a in sp.attributes}) for _, sp in spans if sp.name == "chat fake"
    ]
    for sp, attrs in chats:
        assert sp.kind == sp.SPAN_KIND_CLIENT
        assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "fake"
        assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] >= 1
        assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
        (event,) = sp.events
        ev = {a.key: _value(a.value) for a in event.attributes}
        assert event.name == "gen_ai.evaluation.result" and ev["gen_ai.evaluation.name"] == "exact_match"
        assert ev["gen_ai.evaluation.score.value"] in (0.0, 1.0)
    outputs = [json.loads(attrs["gen_ai.output.messages"])[0]["parts"][0]["content"] for _, attrs in chats]
    assert sorted(outputs) == ["A", "A", "key [REDACTED]"]
    parents = {bytes(sp.parent_span_id) for sp, _ in chats}
    assert parents == {bytes(sp.span_id) for sp, _ in items.values()}


def test_the_seed_readme_instructions_send_grpc(pytester: pytest.Pytester) -> None:
    """``ENABLE_OTEL=true OTEL_ENDPOINT=http://localhost:4317`` and nothing else: gRPC to the collector's port."""
    try:
        collector = GrpcCollector("localhost:4317")
    except (OSError, RuntimeError) as e:
        pytest.skip(f"port 4317 is taken on this machine ({e})")
    try:
        with FakeOpenAIServer() as srv:
            write_suite(pytester.path, srv.base_url, [("a", "A")])
            proc = _run_suite(pytester.path, _otel_env(OTEL_ENDPOINT="http://localhost:4317"))
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert collector.got.wait(10)
        assert sorted(sp.name for _, sp in collector.spans()) == ["chat fake", "llmeval.item", "llmeval.run"]
    finally:
        collector.close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_dead_collector_is_one_warning(
    protocol: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], caplog: Any
) -> None:
    for k in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("OTEL_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    tr = tracing.Tracer.from_env()
    warnings: list[str] = []
    tr.warn = warnings.append
    tr.item(rec("a"))
    tr.item(rec("b", "failed"))
    tr.shutdown()
    tr.item(rec("late"))
    assert len(warnings) == 1, warnings
    (w,) = warnings
    assert w.startswith("llmeval: warning: traces could not be sent (OTLP/")
    assert "Connection refused" in w and w.endswith("the run goes on without them")
    assert tr._quiet.dropped == 5 and tr._quiet.sent == 0
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # nothing from the exporters, gRPC or urllib3
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]


class _Refusing:
    """A collector that answers but takes nothing: HTTP 404 for every POST; gRPC without a TraceService."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        if protocol == "grpc":
            from concurrent import futures

            import grpc

            self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
            self.url = f"http://127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
            self.server.start()
            return

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self.protocol == "grpc":
            self.server.stop(0)
        else:
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.mark.parametrize(
    ("protocol", "reason"), [("grpc", "gRPC UNIMPLEMENTED"), ("http/protobuf", "HTTP 404 Not Found")]
)
def test_a_collector_that_refuses_the_spans_is_one_warning(
    protocol: str, reason: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    collector = _Refusing(protocol)
    for k in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("OTEL_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    try:
        tr = tracing.Tracer.from_env()
        warnings: list[str] = []
        tr.warn = warnings.append
        tr.item(rec("a"))
        tr.shutdown()
    finally:
        collector.close()
    (w,) = warnings
    assert f"): {reason}" in w, w
    assert capfd.readouterr() == ("", "")


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_run_with_a_dead_collector(pytester: pytest.Pytester, protocol: str) -> None:
    """The whole run: same exit status and outcomes as without tracing, one warning line, no traceback."""
    env = _otel_env(OTEL_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", OTEL_EXPORTER_OTLP_PROTOCOL=protocol)
    with FakeOpenAIServer(answer(lambda p: "A")) as srv:
        write_suite(pytester.path, srv.base_url, [("a", "A"), ("b", "B")])
        proc = _run_suite(pytester.path, env)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "1 failed, 1 passed" in proc.stdout, text[-3000:]
    warnings = [line for line in text.splitlines() if "traces could not be sent" in line]
    assert len(warnings) == 1 and "Connection refused" in warnings[0], text[-3000:]
    assert "Traceback" not in text and "Failed to export" not in text and "Transient error" not in text


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


@pytest.mark.parametrize(
    ("protocol", "module", "package"),
    [
        (
            "grpc",
            "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
            "opentelemetry-exporter-otlp-proto-grpc",
        ),
        (
            "http/protobuf",
            "opentelemetry.exporter.otlp.proto.http.trace_exporter",
            "opentelemetry-exporter-otlp-proto-http",
        ),
    ],
)
def test_missing_exporter_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, protocol: str, module: str, package: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(pytest.UsageError, match=rf"{package}: pip install 'pytest-llmeval\[otel\]'"):
        tracing.Tracer.from_env()


# (environment, protocol, endpoint given to the exporter, describe())
TARGETS = [
    ({}, "http/protobuf", "http://localhost:4318/v1/traces", "OTLP/HTTP to http://localhost:4318/v1/traces"),
    (
        {"OTEL_ENDPOINT": "http://localhost:4317"},
        "grpc",
        "http://localhost:4317",
        "OTLP/gRPC to http://localhost:4317 (from OTEL_ENDPOINT)",
    ),
    ({"OTEL_ENDPOINT": "localhost:4317"}, "grpc", "http://localhost:4317", None),
    ({"OTEL_ENDPOINT": "http://collector:4318"}, "http/protobuf", "http://collector:4318/v1/traces", None),
    (
        {"OTEL_ENDPOINT": "http://collector:4318/v1/traces"},
        "http/protobuf",
        "http://collector:4318/v1/traces",
        None,
    ),
    (  # an explicit protocol wins over the port
        {"OTEL_ENDPOINT": "http://localhost:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
        "http/protobuf",
        "http://localhost:4317/v1/traces",
        None,
    ),
    (
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
        "http/protobuf",
        "http://localhost:4318/v1/traces",
        None,
    ),
    (
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "GRPC"},
        "grpc",
        "http://localhost:4317",
        "OTLP/gRPC to http://localhost:4317",
    ),
    (  # the standard variables win over the alias, and describe() says so
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318/", "OTEL_ENDPOINT": "http://b:4317"},
        "http/protobuf",
        "http://a:4318/v1/traces",
        "OTLP/HTTP to http://a:4318/v1/traces (from OTEL_EXPORTER_OTLP_ENDPOINT); "
        "OTEL_ENDPOINT ignored: OTEL_EXPORTER_OTLP_ENDPOINT is set",
    ),
    (  # the signal's own URL is used as given
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://otel.example/custom/path"},
        "http/protobuf",
        "https://otel.example/custom/path",
        None,
    ),
    (  # credentials and query strings stay out of what is printed
        {"OTEL_ENDPOINT": "https://user:s3cret-pw@otel.example:4317/?token=abc"},
        "grpc",
        "https://user:s3cret-pw@otel.example:4317/?token=abc",
        "OTLP/gRPC to https://otel.example:4317/ (from OTEL_ENDPOINT)",
    ),
]


@pytest.mark.parametrize(("env", "protocol", "endpoint", "described"), TARGETS)
def test_resolve_target(env: dict[str, str], protocol: str, endpoint: str, described: str | None) -> None:
    target = tracing.resolve_target(env)
    assert (target.protocol, target.endpoint) == (protocol, endpoint)
    assert target.timeout_s == tracing.EXPORT_TIMEOUT_S
    if described is not None:
        assert target.describe() == described


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL=http/json is not supported",
        ),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift"}, "'thrift': expected grpc or http/protobuf"),
        (
            {"OTEL_ENDPOINT": "http://localhost:43x7"},
            "OTEL_ENDPOINT='http://localhost:43x7' is not a valid URL",
        ),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "OTEL_EXPORTER_OTLP_TIMEOUT='soon': expected seconds"),
    ],
)
def test_bad_otel_settings_are_usage_errors(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        tracing.resolve_target(env)
    for k in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(pytest.UsageError, match=re.escape(message)):
        tracing.Tracer.from_env()


def test_describe_and_an_explicit_timeout(monkeypatch: pytest.MonkeyPatch, memory: Any) -> None:
    assert tracing.Tracer(memory, batch=False).describe() == "traces: InMemorySpanExporter"
    for k in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("ENABLE_OTEL", "true")
    monkeypatch.setenv("OTEL_ENDPOINT", "http://localhost:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "7.5")
    tr = tracing.Tracer.from_env()
    try:
        assert tr.describe() == "traces: OTLP/gRPC to http://localhost:4317 (from OTEL_ENDPOINT)"
        assert tracing.resolve_target().timeout_s == 7.5
        assert type(tr.exporter).__module__.startswith("opentelemetry.exporter.otlp.proto.grpc")
    finally:
        tr._quiet.last_failed = True  # as after a failed export: shutdown() then drops the run span at once
        tr.warn = lambda message: None
        tr.shutdown()
