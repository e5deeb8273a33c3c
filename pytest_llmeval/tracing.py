"""Optional OpenTelemetry traces of a run: a span per item, a GenAI ``chat`` span per model call.

Off by default (``--otel`` or ``ENABLE_OTEL=true`` turn it on) and free when
off: nothing here imports ``opentelemetry`` until a :class:`Tracer` is built.

Shape of a trace (one per run)::

    llmeval.run                         attributes llmeval.run_id, models, pass counts, gate verdict
      llmeval.item                      llmeval.test, .model, .case_id, .outcome, .score.<name>
        chat {model}  (kind CLIENT)     gen_ai.operation.name, gen_ai.request.model,
                                        gen_ai.usage.input_tokens / output_tokens,
                                        gen_ai.response.finish_reasons, llmeval.latency_s ...
                                        events gen_ai.evaluation.result (one per score)

Results reach the controller after the fact (and a cached completion was
made long ago), so spans get explicit times: the chat span ends when the
result arrives and starts ``latency`` before that. Prompt and output text
(``gen_ai.input.messages`` / ``gen_ai.output.messages``) and error messages,
which quote outputs, are recorded only with ``LLMEVAL_OTEL_CAPTURE_CONTENT=true``,
and always pass through :func:`pytest_llmeval.redact.redact`.

Where traces go (:func:`resolve_target`): OTLP over gRPC or HTTP (protobuf), by
the standard variables (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL``,
``..._HEADERS``, ``..._TIMEOUT``, ``OTEL_SERVICE_NAME``, ...) and, when none of
the endpoint variables is set, ``OTEL_ENDPOINT`` (the seed README's name). Without
a protocol variable, an endpoint on port 4317 (the collectors' gRPC port) is
gRPC and any other is HTTP. :meth:`Tracer.describe` says where, in one line.

A collector that cannot be reached costs one warning and at most an export
timeout (:data:`EXPORT_TIMEOUT_S`, unless ``OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT``
says otherwise) at the end of the run: batches that fail are dropped (as the
SDK does), the exporters' own log records are kept off the terminal, and the
final flush is skipped when the last export failed.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .bounds import DEFAULT_LIMIT, cut
from .otlp import (  # noqa: F401  (EXPORT_TIMEOUT_S and resolve_target: where traces go)
    EXPORT_TIMEOUT_S,
    OtlpTarget,
    QuietExporter,
    otlp_exporter,
    quiet_export_loggers,
    resolve_target,
    stderr_warning,
)
from .redact import redact, safe_terminal
from .results import CaseResult

if TYPE_CHECKING:
    from .outcome import RunOutcome

CAPTURE_ENV = "LLMEVAL_OTEL_CAPTURE_CONTENT"
SERVICE_NAME = "pytest-llmeval"
SCOPE = "pytest_llmeval"
TEXT_LIMIT = DEFAULT_LIMIT  # bytes of captured text per attribute; the session sets the run's bound
# The end of the run waits at most this long for the last spans, whatever the exporter does.
SHUTDOWN_TIMEOUT_S = 5.0


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _text(value: Any, limit: int | None = TEXT_LIMIT) -> str:
    """Captured text: redacted and cut to the output bound, marked with its size."""
    return cut(redact(str(value)), limit)[0]


def _duration(rec: CaseResult) -> float | None:
    """The call's duration: its request latency, or for an item of a batch, its time to last token."""
    if rec.latency_s is not None:
        return rec.latency_s
    ttlt = (rec.extra or {}).get("time_to_last_token_s")
    return None if ttlt is None else float(ttlt)


class Tracer:
    """Turns :class:`CaseResult` records into spans; ``shutdown()`` flushes them.

    ``exporter`` is any OpenTelemetry ``SpanExporter`` (an ``InMemorySpanExporter``
    in tests); ``batch=False`` exports each span as it ends. ``target`` is where
    :meth:`describe` says it sends them (default: the exporter's class name).
    """

    def __init__(
        self,
        exporter: Any,
        *,
        batch: bool = True,
        capture_content: bool | None = None,
        resource: Any = None,
        target: OtlpTarget | None = None,
    ) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        from . import __version__

        if resource is None:
            resource = Resource.create({"service.version": __version__})
            if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
                resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
        self.capture_content = (
            _truthy(os.environ.get(CAPTURE_ENV)) if capture_content is None else capture_content
        )
        self.exporter = exporter
        self.text_limit: int | None = TEXT_LIMIT  # the run's output bound, for captured content
        # Where warnings go; the plugin may point it at the terminal. Called from the main thread only.
        self.warn: Callable[[str], None] = stderr_warning
        self.target = target
        self._failure: str | None = None  # the first export failure, until warned about
        self._warned = False
        self._quiet = QuietExporter(exporter, self._note_failure)
        quiet_export_loggers()
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        processor = BatchSpanProcessor(self._quiet) if batch else SimpleSpanProcessor(self._quiet)
        self.provider.add_span_processor(processor)
        self._tracer = self.provider.get_tracer(SCOPE, __version__)
        self._lock = threading.Lock()
        self._closed = False
        self._start_ns = time.time_ns()
        self._run_span = self._tracer.start_span("llmeval.run", start_time=self._start_ns)

    @classmethod
    def from_env(cls) -> Tracer:
        """An OTLP tracer (gRPC or HTTP) configured by the environment; see :func:`resolve_target`."""
        import pytest

        try:
            target = resolve_target()
            exporter = otlp_exporter(target)
        except (ValueError, ImportError) as e:
            raise pytest.UsageError(f"OpenTelemetry tracing: {e}") from None
        tracer = cls(exporter, target=target)
        # A run that ends without shutdown() (no metrics store, an internal error) still flushes.
        atexit.register(tracer.shutdown)
        return tracer

    def describe(self) -> str:
        """Where the spans go, for the session's first lines: ``traces: OTLP/gRPC to http://localhost:4317``."""
        return f"traces: {self.target.describe() if self.target else type(self.exporter).__name__}"

    def _note_failure(self, reason: str) -> None:
        # Any thread (the batch exporter's): remember; the main thread warns.
        if self._failure is None:
            self._failure = reason

    def _warn_once(self) -> None:
        if self._failure is None or self._warned:
            return
        self._warned = True
        reason = safe_terminal(redact(self._failure), 240)
        where = self.target.where() if self.target else type(self.exporter).__name__
        self.warn(
            f"llmeval: warning: traces could not be sent ({where}): {reason}; the run goes on without them"
        )

    # -- spans ---------------------------------------------------------------
    def item(self, rec: CaseResult) -> None:
        """Emit the spans of one finished item."""
        if self._closed:
            return
        self._warn_once()
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

        end = time.time_ns()
        duration = _duration(rec)
        latency_ns = int(max(0.0, duration or 0.0) * 1e9)
        start = end - latency_ns
        if rec.cached:
            # A replayed completion keeps its original latency, which may be longer than the run so far.
            start = max(self._start_ns, start)
        item_span = self._tracer.start_span(
            "llmeval.item",
            context=set_span_in_context(self._run_span),
            start_time=start,
            attributes=self._item_attributes(rec),
        )
        if rec.outcome == "error":
            item_span.set_status(Status(StatusCode.ERROR, "the item errored"))
        evaluated = item_span
        if duration is not None:
            chat = self._tracer.start_span(
                f"chat {rec.model}",
                context=set_span_in_context(item_span),
                kind=SpanKind.CLIENT,
                start_time=start,
                attributes=self._chat_attributes(rec),
            )
            evaluated = chat
        # Evaluation results belong to the operation they judge (GenAI semantic conventions).
        for score in rec.scores:
            evaluated.add_event("gen_ai.evaluation.result", self._evaluation_attributes(score), timestamp=end)
        if evaluated is not item_span:
            evaluated.end(end_time=end)
        item_span.end(end_time=end)

    def _item_attributes(self, rec: CaseResult) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "llmeval.test": redact(rec.test),
            "llmeval.model": redact(rec.model),
            "llmeval.case_id": redact(rec.case_id),
            "llmeval.outcome": rec.outcome,
            "llmeval.passed": bool(rec.passed),
        }
        if rec.tags:
            attrs["llmeval.tags"] = [redact(t) for t in rec.tags]
        main = rec.main_value()
        if main is not None:
            attrs["llmeval.main_score"] = float(main)
        for s in rec.scores:
            if s.get("value") is not None:
                attrs[f"llmeval.score.{redact(str(s['name']))}"] = float(s["value"])
        if rec.outcome == "error":
            attrs["error.type"] = "llmeval.error"
        if rec.error and self.capture_content:
            attrs["llmeval.error"] = _text(rec.error, self.text_limit)
        return attrs

    def _chat_attributes(self, rec: CaseResult) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": redact(rec.model),
            "gen_ai.usage.input_tokens": int(rec.prompt_tokens or 0),
            "gen_ai.usage.output_tokens": int(rec.completion_tokens or 0),
            "llmeval.cost_usd": float(rec.cost or 0.0),
            "llmeval.cached": bool(rec.cached),
            "llmeval.retries": int(rec.retries or 0),
        }
        extra = rec.extra or {}
        if rec.latency_s is not None:  # a request's own latency (an in-process batch has none)
            attrs["llmeval.latency_s"] = float(rec.latency_s)
        if extra.get("time_to_last_token_s") is not None:
            attrs["llmeval.time_to_last_token_s"] = float(extra["time_to_last_token_s"])
            attrs["llmeval.batch_size"] = int(extra.get("batch_size") or 0)
        if extra.get("output_bytes"):
            attrs["llmeval.output_bytes"] = int(extra["output_bytes"])  # the output was cut to the bound
        if rec.finish_reason:
            attrs["gen_ai.response.finish_reasons"] = [str(rec.finish_reason)]
        if self.capture_content:
            if rec.messages:
                attrs["gen_ai.input.messages"] = _text(
                    json.dumps(
                        [
                            {
                                "role": m.get("role", "user"),
                                "parts": [{"type": "text", "content": m.get("content", "")}],
                            }
                            for m in rec.messages
                        ],
                        ensure_ascii=False,
                    ),
                    self.text_limit,
                )
            if rec.output is not None:
                # The output is cut before it is wrapped, so the attribute stays valid JSON.
                attrs["gen_ai.output.messages"] = redact(
                    json.dumps(
                        [
                            {
                                "role": "assistant",
                                "parts": [{"type": "text", "content": _text(rec.output, self.text_limit)}],
                                "finish_reason": rec.finish_reason or "stop",
                            }
                        ],
                        ensure_ascii=False,
                    )
                )
        return attrs

    def _evaluation_attributes(self, score: dict[str, Any]) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "gen_ai.evaluation.name": redact(str(score.get("name", ""))),
            "gen_ai.evaluation.score.label": "pass" if score.get("passed") else "fail",
        }
        if score.get("value") is not None:
            attrs["gen_ai.evaluation.score.value"] = float(score["value"])
        if score.get("threshold") is not None:
            attrs["llmeval.threshold"] = float(score["threshold"])
        # Explanations quote the output ("expected X, got Y"): content, so opt-in only.
        if score.get("explanation") and self.capture_content:
            attrs["gen_ai.evaluation.explanation"] = _text(score["explanation"], self.text_limit)
        return attrs

    # -- the end ------------------------------------------------------------
    def shutdown(self, outcome: RunOutcome | None = None) -> None:
        """End the run span (with the run's figures when ``outcome`` is given) and flush; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if outcome is not None:
            self._run_span.set_attributes(_run_attributes(outcome))
            if outcome.verdict is not None and not outcome.verdict.passed:
                from opentelemetry.trace import Status, StatusCode

                self._run_span.set_status(Status(StatusCode.ERROR, "the quality gate failed"))
        self._run_span.end()
        self._quiet.closing()
        # The SDK's shutdown waits up to 30 s for its worker; a helper thread bounds the wait.
        done = threading.Thread(target=self._shutdown_provider, name="llmeval-otel-shutdown", daemon=True)
        try:
            done.start()
        except RuntimeError:  # from atexit, Python 3.12+ starts no new thread: flush inline
            self._shutdown_provider()
        else:
            done.join(SHUTDOWN_TIMEOUT_S)
        if done.is_alive():
            self._note_failure(f"the exporter did not finish within {SHUTDOWN_TIMEOUT_S:g} s")
        self._warn_once()

    def _shutdown_provider(self) -> None:
        try:
            self.provider.shutdown()
        except Exception as e:  # an unreachable collector must not fail the run
            self._note_failure(f"{type(e).__name__}: {e}")


def _run_attributes(outcome: RunOutcome) -> dict[str, Any]:
    ran = [r for r in outcome.records if r.outcome != "skipped"]
    attrs: dict[str, Any] = {
        "llmeval.run_id": str(outcome.run_id),
        "llmeval.models": [redact(str(m)) for m in outcome.models],
        "llmeval.items": len(outcome.records),
        "llmeval.passed": sum(r.outcome == "passed" for r in ran),
        "llmeval.failed": sum(r.outcome == "failed" for r in ran),
        "llmeval.errors": sum(r.outcome == "error" for r in ran),
    }
    if outcome.verdict is not None:
        attrs["llmeval.gate.passed"] = bool(outcome.verdict.passed)
    return attrs
