"""Issue 19's figures, before and after, side by side: outputs, a dead server, two endpoints, a canary key.

Run (full figures, a few minutes on a quiet machine):
    .venv/bin/python bench/bench_trust.py --before 32b82bd
Smoke (about a minute):
    .venv/bin/python bench/bench_trust.py --before 32b82bd --items 3 --mb 1 --down-items 10

``--before REF`` extracts that commit's ``pytest_llmeval`` (git archive) into a
temporary folder and runs every scenario with it first on ``PYTHONPATH``; the
"after" runs use this checkout. Each scenario is a whole ``pytest`` process
against a loopback server that speaks the OpenAI chat-completions wire format
(``tests/fakes.py``):

* outputs: ``--items`` cases whose answers are ``--mb`` MB each (JUnit XML, the
  default HTML report, the run folder, the metrics DB, the response cache):
  the pytest process's peak RSS and the size of each output file;
* down: ``--down-items`` cases against a port where nothing listens: seconds
  until the process ends, and how many item errors it printed;
* endpoints: two servers answering to one model name (one right, one wrong),
  two runs each sharing a cache: answers of one endpoint replayed for the other;
* canary: a key read through ``api_key_env: LLM_ACCESS_CRED`` that the server
  echoes: occurrences in stdout, JUnit XML, the report, results.jsonl, the DB,
  the cache and an OTLP/HTTP export.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fakes import FakeOpenAIServer, big_reply  # noqa: E402

TEST = (
    "from pytest_llmeval import dataset, scorers\n\n"
    "@dataset('cases.jsonl', max_tokens=16)\n"
    "def test_x(case, completion):\n"
    "    scorers.exact_match(completion.text, case['expected'])\n"
)
CANARY = "cnry-bench-51c0ffee9d2e4b7a8f6e"


def project(root: Path, models: dict[str, dict], n: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = ["models:"]
    for name, fields in models.items():
        lines.append(f"  {name}:")
        lines += [f"    {k}: {json.dumps(v)}" for k, v in fields.items()]
    (root / "models.yaml").write_text("\n".join(lines) + "\n")
    cases = [json.dumps({"id": f"c{i:03d}", "prompt": f"w{i}", "expected": f"w{i}"}) for i in range(n)]
    (root / "cases.jsonl").write_text("\n".join(cases) + "\n")
    (root / "pytest.ini").write_text(
        "[pytest]\nllmeval_models_file = models.yaml\nllmeval_cache_path = cache.sqlite\n"
        "llmeval_metrics_db = metrics.db\nllmeval_runs_dir = runs\n"
    )
    (root / "test_eval.py").write_text(TEST)
    return root


def pytest_run(root: Path, plugin: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    """One pytest process: exit status, wall seconds, peak RSS (MiB) and its output."""
    e = dict(env or os.environ)
    e["PYTHONPATH"] = str(plugin)
    out, err = root / ".stdout", root / ".stderr"
    started = time.perf_counter()
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", *args],
            cwd=root,
            env=e,
            stdout=fo,
            stderr=fe,
        )
        _, status, usage = os.wait4(proc.pid, 0)
    return {
        "rc": os.waitstatus_to_exitcode(status),
        "s": time.perf_counter() - started,
        "rss_mib": usage.ru_maxrss / 1024,
        "stdout": out.read_text(errors="replace"),
        "stderr": err.read_text(errors="replace"),
    }


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def scenario_outputs(work: Path, plugin: Path, items: int, mb: float) -> dict:
    with FakeOpenAIServer(big_reply(int(mb * 1_000_000))) as srv:
        root = project(work, {"fake": {"type": "openai", "model": "fake", "base_url": srv.base_url}}, items)
        r = pytest_run(root, plugin, "--model", "fake", "--junitxml=junit.xml", "--cache", "rw")
    run_dir = next((root / "runs").iterdir())
    files = {
        "junit.xml": root / "junit.xml",
        "metrics.db": root / "metrics.db",
        "cache.sqlite": root / "cache.sqlite",
    }
    files.update({p.name: p for p in run_dir.iterdir()})
    mib = {name: round(p.stat().st_size / 2**20, 2) for name, p in sorted(files.items()) if p.is_file()}
    return {"rc": r["rc"], "peak_rss_mib": round(r["rss_mib"]), "wall_s": round(r["s"], 1), "file_mib": mib}


def scenario_down(work: Path, plugin: Path, items: int) -> dict:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    root = project(work, {"fake": {"type": "openai", "model": "fake", "base_url": url}}, items)
    r = pytest_run(root, plugin, "--model", "fake", "--cache", "off")
    text = r["stdout"] + r["stderr"]
    errors = sum(1 for line in text.splitlines() if line.startswith("ERROR test_eval.py"))
    last = [ln for ln in text.splitlines() if "refused" in ln.lower() or "Connection error" in ln][-1:]
    session = re.findall(r" in ([\d.]+)s", r["stdout"])  # pytest's own figure, without interpreter start-up
    return {
        "rc": r["rc"],
        "seconds_to_the_end": round(r["s"], 1),
        "pytest_session_s": float(session[-1]) if session else None,
        "item_errors": errors,
        "message": last,
    }


def scenario_endpoints(work: Path, plugin: Path, items: int) -> dict:
    with FakeOpenAIServer() as right, FakeOpenAIServer(lambda m, b: "nope") as wrong:
        root = project(
            work,
            {
                "a": {"type": "openai", "model": "fake", "base_url": right.base_url},
                "b": {"type": "openai", "model": "fake", "base_url": wrong.base_url},
            },
            items,
        )
        for _ in range(2):
            for name in ("a", "b"):
                pytest_run(root, plugin, "--model", name)
        asked = {"a": right.completed, "b": wrong.completed}
    recs = [
        json.loads(line)
        for d in (root / "runs").iterdir()
        for line in (d / "results.jsonl").read_text().splitlines()
    ]
    # An answer of the other endpoint: "nope" for a, anything else for b.
    cross = sum(1 for r in recs if r["cached"] and (r["output"] == "nope") != (r["model"] == "b"))
    return {"requests_sent": asked, "records": len(recs), "cross_endpoint_hits": cross}


def scenario_canary(work: Path, plugin: Path, items: int) -> dict:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    bodies: list[bytes] = []

    class Collector(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    otlp = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    Thread(target=otlp.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        LLM_ACCESS_CRED=CANARY,
        ENABLE_OTEL="true",
        LLMEVAL_OTEL_CAPTURE_CONTENT="true",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{otlp.server_address[1]}",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
    )
    with FakeOpenAIServer(lambda m, b: f"{m[-1]['content']} {CANARY}", api_key=CANARY, echo_auth=True) as srv:
        fields = {
            "type": "openai",
            "model": "fake",
            "base_url": srv.base_url,
            "api_key_env": "LLM_ACCESS_CRED",
        }
        root = project(work, {"fake": fields}, items)
        r = pytest_run(root, plugin, "--model", "fake", "--junitxml=junit.xml", "-rA", env=env)
    otlp.shutdown()
    found = {
        "stdout+stderr": (r["stdout"] + r["stderr"]).count(CANARY),
        "otlp": b"".join(bodies).count(CANARY.encode()),
    }
    for p in [
        root / "junit.xml",
        *root.glob("metrics.db*"),
        *root.glob("cache.sqlite*"),
        *(root / "runs").rglob("*"),
    ]:
        if p.is_file():
            found[p.name] = p.read_bytes().count(CANARY.encode())
    return {"occurrences": found, "total": sum(found.values())}


def extract(ref: str, into: Path) -> Path:
    """``pytest_llmeval`` as of git ``ref``, in ``into``."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "pytest_llmeval"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default=None, metavar="REF", help="git ref of the plugin to compare with")
    ap.add_argument("--items", type=int, default=30, help="cases with huge answers (default 30)")
    ap.add_argument("--mb", type=float, default=5.0, help="MB per answer (default 5)")
    ap.add_argument("--down-items", type=int, default=150, help="cases against a dead server (default 150)")
    ap.add_argument("--only", nargs="*", default=["outputs", "down", "endpoints", "canary"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmeval-bench-trust-") as tmp:
        variants = {"after": ROOT}
        if args.before:
            variants = {"before": extract(args.before, Path(tmp) / "before"), **variants}
        results: dict[str, dict] = {}
        for label, plugin in variants.items():
            w = Path(tmp) / label
            res = results.setdefault(label, {})
            if "outputs" in args.only:
                res["outputs"] = scenario_outputs(w / "outputs", plugin, args.items, args.mb)
            if "down" in args.only:
                res["down"] = scenario_down(w / "down", plugin, args.down_items)
            if "endpoints" in args.only:
                res["endpoints"] = scenario_endpoints(w / "endpoints", plugin, 6)
            if "canary" in args.only:
                res["canary"] = scenario_canary(w / "canary", plugin, 3)
            print(f"== {label} ({plugin})", flush=True)
            print(json.dumps(res, indent=2), flush=True)


if __name__ == "__main__":
    main()
