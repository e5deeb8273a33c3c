"""Harness overhead: 10,000 eval items with a warm cache versus 10,000 bare parametrized tests.

Run:  .venv/bin/python bench/bench_overhead.py [--n 10000] [--against CHECKOUT]
Both are whole pytest processes, timed side by side in one run (best of 3). ``--against`` adds the
same llmeval variants run with another checkout's plugin (e.g. a worktree of an earlier commit:
``git worktree add /tmp/before <commit>``), each with its own warm cache, to compare code versions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _common import timed

HERE = Path(__file__).parent / "overhead"


def run(args: list[str], cwd: Path, code: Path | None = None) -> float:
    # Bytecode as on a user's machine: pytest rewrites the plugin's modules (an entry-point plugin's
    # asserts) and caches the result as .pyc; with PYTHONDONTWRITEBYTECODE=1 (set on this build
    # machine) every run would parse and rewrite every module again, a cost no user pays.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    return timed(cmd, cwd, env, ok_codes=(0,))[0]  # a failed item would time the failure path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--against", type=Path, default=None, help="another checkout's plugin, side by side")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmeval-bench-"))
    for f in HERE.iterdir():
        if f.is_file():
            (work / f.name).write_text(f.read_text().replace("10_000", str(a.n)))
    (work / "pytest.ini").write_text("[pytest]\n")
    with open(work / "cases.jsonl", "w") as f:
        for i in range(a.n):
            f.write(json.dumps({"id": f"c{i:05d}", "prompt": f"p{i}", "expected": f"p{i}"}) + "\n")
    codes: dict[str, Path | None] = {"": None}
    if a.against is not None:
        codes = {" [this checkout]": None, f" [{a.against}]": a.against.resolve()}
    variants: dict[str, tuple[list[str], Path | None]] = {"bare pytest": (["test_bare.py"], None)}
    for k, (label, code) in enumerate(codes.items()):
        common = [
            "--model",
            "echo",
            "--models-file",
            "models.yaml",
            "--cache-path",
            str(work / f"cache{k}.sqlite"),
        ]
        run(["test_evals.py", *common, "--no-metrics"], work, code)  # warm this version's cache
        variants[f"llmeval, warm cache, no metrics{label}"] = (
            ["test_evals.py", *common, "--no-metrics"],
            code,
        )
        variants[f"llmeval, warm cache, metrics db + run folder + HTML report{label}"] = (
            [
                "test_evals.py",
                *common,
                "--metrics-db",
                str(work / f"metrics{k}.db"),
                "--output",
                str(work / f"run{k}"),
            ],
            code,
        )
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(a.repeats):
        # Every other round in reverse order: no variant always runs after the same one.
        for name in list(variants) if r % 2 == 0 else list(reversed(variants)):
            args, code = variants[name]
            if "--output" in args:  # a fresh run folder each time
                args = [*args[:-1], f"{args[-1]}-{r}"]
            times[name].append(run(args, work, code))
    best = {name: min(ts) for name, ts in times.items()}
    median = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"{a.n} items, {a.repeats} rounds (whole-process wall time): best, and median")
    for name in variants:
        print(
            f"  {name:<90} best {best[name]:7.2f}s ratio {best[name] / best['bare pytest']:.2f}"
            f" | median {median[name]:7.2f}s ratio {median[name] / median['bare pytest']:.2f}"
        )


if __name__ == "__main__":
    main()
