"""What tracing adds to a run: off, a live OTLP receiver, a refusing port, a collector that never answers.

Run:  .venv/bin/python bench/bench_otel.py [--n 2000] [--repeats 3]
Smoke (about a minute):  .venv/bin/python bench/bench_otel.py --n 50 --repeats 1

Whole pytest processes over the overhead benchmark's instant in-process model
(bench/overhead), warm cache, no metrics, timed side by side in one run (best
of --repeats). Each tracing variant is reported as seconds added to the run
without tracing and, for an unreachable collector, to the same protocol's live
receiver run (what the dead collector itself costs). The target: a collector
that is down adds about 1-2 s (one export timeout), never a slow or failed run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from _common import timed

HERE = Path(__file__).parent / "overhead"


def _live_grpc() -> tuple[str, object]:
    import grpc

    # An empty ExportTraceServiceResponse is zero bytes: no proto classes needed to answer.
    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(lambda raw, ctx: b"", response_serializer=bytes)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return f"http://127.0.0.1:{port}", lambda: server.stop(0)


def _live_http() -> tuple[str, object]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}", lambda: (httpd.shutdown(), httpd.server_close())


def _refused() -> tuple[str, object]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}", lambda: None


def _hanging() -> tuple[str, object]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)  # the kernel completes connections; nothing ever reads or answers
    return f"http://127.0.0.1:{s.getsockname()[1]}", s.close


def run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    return timed(cmd, cwd, env, ok_codes=(0,), timeout=1800)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="eval items per run (default 2000)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per variant; the best counts (default 3)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmeval-bench-otel-"))
    for f in HERE.iterdir():
        if f.is_file():
            (work / f.name).write_text(f.read_text())
    (work / "pytest.ini").write_text("[pytest]\n")
    with open(work / "cases.jsonl", "w") as f:
        for i in range(a.n):
            f.write(json.dumps({"id": f"c{i:05d}", "prompt": f"p{i}", "expected": f"p{i}"}) + "\n")
    common = ["test_evals.py", "--model", "echo", "--models-file", "models.yaml", "--no-metrics"]
    common += ["--cache-path", str(work / "cache.sqlite")]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "ENABLE_OTEL"}
    run(common, work, base_env)  # warm the cache

    endpoints = {"live receiver": {"grpc": _live_grpc, "http/protobuf": _live_http}}
    endpoints["refused port"] = {"grpc": _refused, "http/protobuf": _refused}
    endpoints["never answers"] = {"grpc": _hanging, "http/protobuf": _hanging}
    variants: dict[str, tuple[dict[str, str], object]] = {"tracing off": (base_env, None)}
    for kind, makers in endpoints.items():
        for protocol, make in makers.items():
            url, close = make()
            env = {
                **base_env,
                "ENABLE_OTEL": "true",
                "OTEL_ENDPOINT": url,
                "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            }
            variants[f"{protocol:<13} {kind}"] = (env, close)

    best: dict[str, float] = {}
    warnings: dict[str, int] = {}
    try:
        for _ in range(a.repeats):
            for name, (env, _close) in variants.items():
                t, out = run(common, work, env)
                best[name] = min(best.get(name, t), t)
                warnings[name] = out.count("traces could not be sent")
    finally:
        for _env, close in variants.values():
            if callable(close):
                close()
    base = best["tracing off"]
    print(f"{a.n} items, warm cache, best of {a.repeats} (whole-process wall time)")
    print("  added: vs tracing off (imports, spans, export); vs live: what the unreachable collector costs")
    for name, t in best.items():
        line = f"  {name:<32} {t:7.2f}s"
        if name != "tracing off":
            live = best[name.replace(name.split(maxsplit=1)[1], "live receiver")]
            line += f"  added {t - base:+6.2f}s  vs live {t - live:+6.2f}s  warnings {warnings[name]}"
        print(line)


if __name__ == "__main__":
    main()
