"""Harness overhead: 10,000 eval items with a warm cache versus 10,000 bare parametrized tests.

Run:  .venv/bin/python bench/bench_overhead.py [--n 10000]
Both are whole pytest processes, timed side by side in one run (best of 3).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent / "overhead"


def run(args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(f"pytest failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmeval-bench-"))
    for f in HERE.iterdir():
        if f.is_file():
            (work / f.name).write_text(f.read_text().replace("10_000", str(a.n)))
    (work / "pytest.ini").write_text("[pytest]\n")
    with open(work / "cases.jsonl", "w") as f:
        for i in range(a.n):
            f.write(json.dumps({"id": f"c{i:05d}", "prompt": f"p{i}", "expected": f"p{i}"}) + "\n")
    common = ["--model", "echo", "--models-file", "models.yaml", "--cache-path", str(work / "cache.sqlite")]
    run(["test_evals.py", *common, "--no-metrics"], work)  # warm the cache
    variants = {
        "bare pytest": ["test_bare.py"],
        "llmeval, warm cache, no metrics": ["test_evals.py", *common, "--no-metrics"],
        "llmeval, warm cache, metrics db + run folder + HTML report": [
            "test_evals.py",
            *common,
            "--metrics-db",
            str(work / "metrics.db"),
            "--output",
            str(work / "run"),
        ],
    }
    best: dict[str, float] = {}
    for _ in range(a.repeats):
        for name, args in variants.items():
            t = run(args, work)
            best[name] = min(best.get(name, t), t)
    base = best["bare pytest"]
    print(f"{a.n} items, best of {a.repeats} (whole-process wall time)")
    for name, t in best.items():
        print(f"  {name:<60} {t:7.2f}s  ratio {t / base:.2f}")


if __name__ == "__main__":
    main()
