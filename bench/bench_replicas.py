"""Two replicas of one deployment against one: throughput, and a replica killed mid-run.

Loopback servers that speak the OpenAI wire format (tests/fakes.py) stand in for
vLLM replicas: each serves at most ``--cap`` requests at once, each in a fixed
``--service-time``, so one replica's throughput is cap / service time. The model's
``max_concurrency`` is the same cap, per replica. The suite (``--cases`` echo cases)
runs through pytest and the plugin, alternately against one replica and against
two, ``--repeats`` times each, side by side in one run. Throughput is counted where
the replicas see it: cases over the span from the first request's arrival to the
last answer (whole-process times, pytest start-up included, are printed too).

Then the same suite with two replicas, one of which is killed (its port refuses,
its open connections are reset) a quarter of the way through the run: every
case must have exactly one record, passed.

    python bench/bench_replicas.py                                   # the measurement
    python bench/bench_replicas.py --cases 60 --repeats 1            # a smoke test (about a minute)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fakes import FakeOpenAIServer, echo_last_user  # noqa: E402

TEST = """\
from pytest_llmeval import dataset, scorers


@dataset("cases.jsonl", max_tokens=16)
def test_echo(case, completion):
    scorers.exact_match(completion.text, case["expected"])
"""


class Replica:
    """A loopback replica that notes when each answer left (for the throughput span)."""

    def __init__(self, service_time: float, cap: int) -> None:
        self.answered: list[float] = []
        self.kill_after: int | None = None
        self.server = FakeOpenAIServer(self._respond, delay=service_time, capacity=cap)

    def _respond(self, messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
        with self.server.lock:
            self.answered.append(time.monotonic())
            n = len(self.answered)
        if self.kill_after is not None and n == self.kill_after:
            threading.Thread(target=self.server.kill, daemon=True).start()
        return echo_last_user(messages, body)

    def reset(self) -> None:
        with self.server.lock:
            self.answered.clear()
            self.server.times.clear()
            self.server.requests.clear()


def project(work: Path, n: int, models: dict[str, list[str]], cap: int) -> None:
    (work / "pytest.ini").write_text("[pytest]\n")
    (work / "test_bench.py").write_text(TEST)
    (work / "cases.jsonl").write_text(
        "".join(
            json.dumps({"id": f"c{i:05d}", "prompt": f"w{i}", "expected": f"w{i}"}) + "\n" for i in range(n)
        )
    )
    lines = ["models:"]
    for name, urls in models.items():
        lines += [f"  {name}:", "    type: openai", "    model: fake", f"    replicas: {json.dumps(urls)}"]
        lines += [f"    max_concurrency: {cap}", "    timeout: 30"]
    (work / "models.yaml").write_text("\n".join(lines) + "\n")


def run(work: Path, model: str, out: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--model", model]
    cmd += ["--models-file", "models.yaml", "--cache", "off", "--no-llmeval-report", "--output", out]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=3600)
    return time.perf_counter() - started, proc


def span(replicas: list[Replica]) -> float:
    """Seconds from the first request's arrival at any replica to the last answer."""
    first = min(t for r in replicas for t in r.server.times)
    last = max(t for r in replicas for t in r.answered)
    return last - first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=400)
    ap.add_argument("--service-time", type=float, default=0.2, help="seconds per request on a replica")
    ap.add_argument(
        "--cap", type=int, default=4, help="requests one replica serves at once (and the client's limit)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    a, b = Replica(args.service_time, args.cap), Replica(args.service_time, args.cap)
    with a.server, b.server, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        project(
            work,
            args.cases,
            {"one": [a.server.base_url], "two": [a.server.base_url, b.server.base_url]},
            args.cap,
        )
        rates: dict[str, list[float]] = {"one": [], "two": []}
        walls: dict[str, list[float]] = {"one": [], "two": []}
        for i in range(args.repeats):
            for variant, used in (("one", [a]), ("two", [a, b])):  # alternated, so load drifts hit both
                for r in (a, b):
                    r.reset()
                wall, proc = run(work, variant, f"runs/{variant}-{i}")
                if proc.returncode != 0:
                    sys.exit(
                        f"{variant} run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
                    )
                rates[variant].append(args.cases / span(used))
                walls[variant].append(wall)
                print(
                    f"  {variant} replica(s), run {i + 1}: {rates[variant][-1]:.1f} cases/s, process {wall:.1f} s"
                )
        one, two = statistics.median(rates["one"]), statistics.median(rates["two"])
        ideal = args.cap / args.service_time
        print(f"one replica:  {one:.1f} cases/s (ideal {ideal:.1f}), median of {args.repeats}")
        print(f"two replicas: {two:.1f} cases/s (ideal {2 * ideal:.1f})")
        print(f"throughput ratio two/one: {two / one:.2f}x (goal >= 1.8x)")
        print(
            f"whole processes (pytest start-up included): {statistics.median(walls['one']):.1f} s vs "
            f"{statistics.median(walls['two']):.1f} s"
        )

    # One of two replicas dies a quarter of the way through.
    a, b = Replica(args.service_time, args.cap), Replica(args.service_time, args.cap)
    a.kill_after = max(1, args.cases // 8)  # an eighth of the cases from a: a quarter of the run
    with a.server, b.server, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        project(work, args.cases, {"two": [a.server.base_url, b.server.base_url]}, args.cap)
        wall, proc = run(work, "two", "runs/kill")
        records = [json.loads(x) for x in (work / "runs" / "kill" / "results.jsonl").read_text().splitlines()]
        ids = [r["nodeid"] for r in records]
        passed = sum(r["outcome"] == "passed" for r in records)
        print(
            f"replica killed after {a.kill_after} answers ({len(b.answered)} answered by the other): "
            f"{args.cases - passed} lost items, {len(ids) - len(set(ids))} duplicated records, "
            f"{len(records)} records for {args.cases} cases, exit status {proc.returncode}, {wall:.1f} s"
        )
        if passed != args.cases or len(ids) != len(set(ids)) or proc.returncode != 0:
            sys.exit(f"items were lost or duplicated:\n{proc.stdout[-3000:]}")


if __name__ == "__main__":
    main()
