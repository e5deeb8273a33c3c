"""Where OpenTelemetry traces go, and an OTLP exporter that fails quietly.

:func:`resolve_target` reads the standard OTLP variables (and the seed README's
``OTEL_ENDPOINT`` alias) into an :class:`OtlpTarget`; the exporter built for it
is wrapped so that a collector that cannot be reached costs one warning and a
bounded wait, never a stack trace per batch.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .redact import redact

# One export (with the exporter's own retries) gives up after this long; a collector that is
# down therefore adds about this much to a run, once, at the end. Enough for a loaded collector.
EXPORT_TIMEOUT_S = 2.0
GRPC, HTTP = "grpc", "http/protobuf"
GRPC_PORT, HTTP_PORT = 4317, 4318
ALIAS_ENV = "OTEL_ENDPOINT"

_MISSING = (
    "OpenTelemetry tracing (--otel / ENABLE_OTEL) over {protocol} needs opentelemetry-sdk and "
    "{package}: pip install 'pytest-llmeval[otel]'"
)
_PACKAGES = {GRPC: "opentelemetry-exporter-otlp-proto-grpc", HTTP: "opentelemetry-exporter-otlp-proto-http"}
_KIND = {GRPC: "OTLP/gRPC", HTTP: "OTLP/HTTP"}


# -- where traces go ----------------------------------------------------------------
@dataclass(frozen=True)
class OtlpTarget:
    """An OTLP destination: protocol, the URL the exporter gets, and which variable said so."""

    protocol: str  # GRPC or HTTP
    endpoint: str  # gRPC: scheme://host:port; HTTP: the full traces URL
    source: str  # the environment variable the endpoint came from, or "default"
    timeout_s: float
    note: str = ""  # e.g. that OTEL_ENDPOINT was ignored

    def where(self) -> str:
        """``OTLP/gRPC to http://localhost:4317`` (credentials and query left out)."""
        return f"{_KIND[self.protocol]} to {_display_url(self.endpoint)}"

    def describe(self) -> str:
        """:meth:`where`, and which variable said so."""
        text = self.where() + ("" if self.source == "default" else f" (from {self.source})")
        return f"{text}; {self.note}" if self.note else text


def _display_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return redact(urlunsplit((parts.scheme, netloc, parts.path, "", "")))


def _with_scheme(url: str) -> str:
    # "localhost:4317" is how many people write a gRPC endpoint.
    return url if "://" in url else f"http://{url}"


def resolve_target(env: Mapping[str, str] | None = None) -> OtlpTarget:
    """Where the standard OTLP variables (and the ``OTEL_ENDPOINT`` alias) send traces.

    Raises ``ValueError`` naming the variable when a value cannot be used.
    """
    env = os.environ if env is None else env

    def get(name: str) -> str:
        return (env.get(name) or "").strip()

    note = ""
    source, endpoint, signal_url = "default", "", False
    for name, is_signal in (
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", True),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", False),
        (ALIAS_ENV, False),
    ):
        if get(name):
            source, endpoint, signal_url = name, _with_scheme(get(name)), is_signal
            break
    if source not in ("default", ALIAS_ENV) and get(ALIAS_ENV):
        note = f"{ALIAS_ENV} ignored: {source} is set"
    try:
        port = urlsplit(endpoint).port if endpoint else None
    except ValueError:
        raise ValueError(
            f"{source}={get(source)!r} is not a valid URL (expected e.g. http://localhost:4317)"
        ) from None

    protocol = ""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if get(name):
            protocol = get(name).lower()
            if protocol == "http/json":
                raise ValueError(
                    f"{name}=http/json is not supported by the Python OTLP exporters; use grpc or http/protobuf"
                )
            if protocol not in (GRPC, HTTP):
                raise ValueError(f"{name}={get(name)!r}: expected grpc or http/protobuf")
            break
    if not protocol:
        # Collectors listen for gRPC on 4317 and HTTP on 4318; elsewhere, OTLP's default (HTTP).
        protocol = GRPC if port == GRPC_PORT else HTTP

    if not endpoint:
        endpoint = f"http://localhost:{GRPC_PORT if protocol == GRPC else HTTP_PORT}"
    if protocol == HTTP and not signal_url:
        # A base URL gets the signal path, as the exporter does for OTEL_EXPORTER_OTLP_ENDPOINT.
        base = endpoint.rstrip("/")
        endpoint = base if base.endswith("/v1/traces") else f"{base}/v1/traces"

    timeout = EXPORT_TIMEOUT_S
    for name in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        if get(name):
            try:
                timeout = float(get(name))  # seconds, as the Python exporters read it
            except ValueError:
                raise ValueError(f"{name}={get(name)!r}: expected seconds") from None
            if timeout <= 0:
                raise ValueError(f"{name}={get(name)!r}: expected a positive number of seconds")
            break
    return OtlpTarget(protocol, endpoint, source, timeout, note)


def otlp_exporter(target: OtlpTarget) -> Any:
    """The OpenTelemetry OTLP span exporter for ``target`` (imported only now)."""
    try:
        if target.protocol == GRPC:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ImportError(
            _MISSING.format(protocol=_KIND[target.protocol], package=_PACKAGES[target.protocol])
        ) from None
    return OTLPSpanExporter(endpoint=target.endpoint, timeout=target.timeout_s)


# -- an exporter that fails quietly ---------------------------------------------------
_capture = threading.local()  # .messages: the export running in this thread collects log records here
_QUIET_PREFIXES = ("opentelemetry", "grpc", "urllib3", "requests")


class _ExportLogFilter(logging.Filter):
    """Keeps the exporters' log records (stack traces, one per failed batch) off the terminal.

    Only records logged by an export that :class:`QuietExporter` is running in the
    same thread are taken; their messages become the reason in the one warning.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        messages = getattr(_capture, "messages", None)
        if messages is None:
            return True
        if record.levelno >= logging.WARNING:
            messages.append(record.getMessage())
        return False


_FILTER = _ExportLogFilter()


def quiet_export_loggers() -> None:
    # A filter on a logger applies only to records logged on it, so each exporter module's own;
    # first in line, before the SDK's DuplicateFilter would drop a repeated failure unseen.
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.startswith(_QUIET_PREFIXES):
            if _FILTER not in logger.filters:
                logger.filters.insert(0, _FILTER)


class QuietExporter:
    """Wraps a ``SpanExporter``: never raises, never logs, reports its first failure once.

    ``on_failure(reason)`` is called from the exporting thread; after :meth:`closing`
    a failure already seen makes later exports drop their spans at once, so a
    run whose collector is down does not wait for it at the end.
    """

    def __init__(self, inner: Any, on_failure: Callable[[str], None]) -> None:
        self.inner = inner
        self.on_failure = on_failure
        self.sent = self.dropped = 0
        self.last_failed = False
        self._closing = False

    def _call(self, fn: Callable[[], Any]) -> tuple[Any, list[str]]:
        _capture.messages = messages = []
        try:
            return fn(), messages
        except Exception as e:  # an exporter bug or an unexpected transport error: still one warning
            messages.append(f"{type(e).__name__}: {e}")
            return None, messages
        finally:
            _capture.messages = None

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        if self._closing and self.last_failed:
            self.dropped += len(spans)
            return SpanExportResult.FAILURE
        result, messages = self._call(lambda: self.inner.export(spans))
        if result == SpanExportResult.SUCCESS:
            self.sent += len(spans)
            self.last_failed = False
            return result
        self.dropped += len(spans)
        self.last_failed = True
        self.on_failure(failure_reason(messages))
        return SpanExportResult.FAILURE

    def closing(self) -> None:
        self._closing = True

    def shutdown(self) -> None:
        self._call(self.inner.shutdown)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        result, _ = self._call(lambda: self.inner.force_flush(timeout_millis))
        return bool(result)


def failure_reason(messages: list[str]) -> str:
    """A short cause from the exporters' log messages: ``Connection refused``, ``HTTP 404 Not Found``, ..."""
    text = " ".join(messages)
    for pattern, fmt in (
        (r"\[Errno \d+\] ([^\"')]+)", "{0}"),
        (r"code: (\d{3}), reason: ([^,]+?)\.?$", "HTTP {0} {1}"),
        (r"\b(timed out|timeout)\b", "no answer in time"),
        (
            r"StatusCode\.(\w+)[^\n]*?(?:[Ee]rror details|[Ee]rror message): (?:.*: )?([^:;\n]+?)\s*$",
            "gRPC {0}: {1}",
        ),
        (r"StatusCode\.(\w+)", "gRPC {0}"),
    ):
        for message in messages:
            m = re.search(pattern, message)
            if m:
                return fmt.format(*(g.strip() for g in m.groups()))
    return text.strip().splitlines()[0] if text.strip() else "the export failed"


def stderr_warning(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
