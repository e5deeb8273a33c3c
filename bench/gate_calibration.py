"""The quality gate, calibrated: false alarms on A/A runs, power on A/B runs, detectable effects.

Drives the gate's own code: every comparison is a ``gate.compare`` call on a baseline
entry and a current :class:`~pytest_llmeval.results.Aggregate` whose per-case entries
have the shape ``results.aggregate`` gives them (tests/test_gate.py checks that), with
the default tolerance (``pass_rate:0``) in the default ``significant`` mode.

Synthetic suites: each comparison draws ``n`` per-case pass probabilities from
Beta(a, b) (heterogeneous: most cases nearly always pass or fail, some are flaky),
then samples each case ``repeats`` times in the baseline run and in the current run.

* A/A: both runs from the same probabilities (the same model twice). A failed gate is
  a false alarm; the goal is a rate at or below alpha.
* A/B: the current run's probabilities are the baseline's scaled by (1 - drop / mean),
  so the suite's expected pass rate falls by exactly ``drop``. Power is the share of
  comparisons where the gate fails.
* A/A', why the case is the unit: two runs whose per-case probabilities differ case by
  case but are exchangeable (same recipe trained twice: a shared per-case difficulty
  plus independent noise on the logit scale), so neither is better on average. The
  gate's clustered test is compared with a test that treats every (case, sample) pair
  as independent, which is what pooling the samples would do.

Run (prints a Markdown report; the figures in docs/gate_statistics.md come from it):

    python bench/gate_calibration.py                                  # 1,000 A/A, 400 A/B, 500 A/A' per row
    python bench/gate_calibration.py --aa 5000 --ab 2000 --aa2 2000   # tighter intervals (about 5x as long)
    python bench/gate_calibration.py --quick                          # smoke test: 100 per row
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_llmeval import baseline, gate, stats  # noqa: E402
from pytest_llmeval.results import Aggregate, outcome_from_samples  # noqa: E402

TEST, MODEL = "tests/test_calibration.py::test_sim", "sim"
BETA = (1.4, 0.6)  # mean pass probability 0.7, mean per-case variance p(1-p) of 0.14


def suite(rng: np.random.Generator, n: int, beta: tuple[float, float] = BETA) -> np.ndarray:
    """Per-case pass probabilities of one synthetic suite."""
    return rng.beta(beta[0], beta[1], size=n)


def sample(rng: np.random.Generator, probs: np.ndarray, repeats: int) -> np.ndarray:
    """Pass (True) or fail of each case's samples: an array of n rows and ``repeats`` columns."""
    return rng.random((len(probs), repeats)) < probs[:, None]


@functools.cache
def _outcome(passes: int, samples: int) -> str:
    return outcome_from_samples(["passed"] * passes + ["failed"] * (samples - passes))


def case_entries(outcomes: np.ndarray) -> dict[str, dict]:
    """Per-case entries as results.aggregate builds them (exact-match score: 1.0 pass, 0.0 fail)."""
    cases = {}
    repeats = outcomes.shape[1]
    for i, row in enumerate(outcomes.tolist()):
        if repeats == 1:
            cases[f"c{i:04d}"] = {
                "passed": row[0],
                "outcome": "passed" if row[0] else "failed",
                "score": 1.0 if row[0] else 0.0,
                "latency": None,
            }
            continue
        k = sum(row)
        outcome = _outcome(k, repeats)
        cases[f"c{i:04d}"] = {
            "passed": outcome == "passed",
            "outcome": outcome,
            "score": k / repeats,
            "latency": None,
            "pass_fraction": k / repeats,
            "samples": repeats,
        }
    return cases


def aggregate_of(outcomes: np.ndarray) -> Aggregate:
    """The current run's Aggregate (only what the pass-rate gate reads is filled in)."""
    n = outcomes.size
    passed = int(outcomes.sum())
    return Aggregate(
        test=TEST, model=MODEL, n=n, passed=passed, failed=n - passed, pass_rate=passed / n,
        scores={"exact_match": passed / n}, cases=case_entries(outcomes),
    )  # fmt: skip


def entries_of(outcomes: np.ndarray) -> dict:
    """Baseline entries holding one run, with its cases as the gate saves them."""
    agg = aggregate_of(outcomes)
    entry = {
        "n": agg.n,
        "pass_rate": agg.pass_rate,
        "scores": agg.scores,
        "errors": 0,
        "cases": {cid: baseline.case_entry(c) for cid, c in agg.cases.items()},
    }
    return {TEST: {MODEL: entry}}


def run_gate(base: np.ndarray, cur: np.ndarray, mode: str = "significant") -> gate.Verdict:
    """The gate's verdict for two runs, with the default tolerance."""
    return gate.compare(entries_of(base), [aggregate_of(cur)], tolerances=[], floors=[], mode=mode)


@dataclass
class Rate:
    """A count of events in trials, with a Wilson 95% interval."""

    hits: int
    trials: int

    @property
    def rate(self) -> float:
        return self.hits / self.trials

    def interval(self) -> tuple[float, float]:
        z, n, p = 1.959964, self.trials, self.rate
        mid = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, mid - half), min(1.0, mid + half)

    def __str__(self) -> str:
        lo, hi = self.interval()
        return f"{self.rate:.3f} [{lo:.3f}, {hi:.3f}] ({self.hits}/{self.trials})"


def false_alarms(n: int, repeats: int, comparisons: int, seed: int = 0) -> tuple[Rate, Rate]:
    """A/A: (share of failed gates, share of p < alpha in either direction)."""
    rng = np.random.default_rng(seed)
    failed = significant = 0
    for _ in range(comparisons):
        probs = suite(rng, n)
        v = run_gate(sample(rng, probs, repeats), sample(rng, probs, repeats))
        failed += not v.passed
        significant += v.rows[0].p_value < stats.ALPHA
    return Rate(failed, comparisons), Rate(significant, comparisons)


def power(n: int, repeats: int, drop: float, comparisons: int, seed: int = 1) -> Rate:
    """A/B with the suite's expected pass rate lowered by ``drop``: share of failed gates."""
    rng = np.random.default_rng(seed)
    failed = 0
    for _ in range(comparisons):
        probs = suite(rng, n)
        worse = probs * (1 - drop / probs.mean())
        failed += not run_gate(sample(rng, probs, repeats), sample(rng, worse, repeats)).passed
    return Rate(failed, comparisons)


def exchangeable_null(
    n: int, repeats: int, comparisons: int, seed: int = 2, noise: float = 1.0
) -> tuple[Rate, Rate]:
    """A/A': (gate failures, failures of a test that pools samples as independent pairs)."""
    rng = np.random.default_rng(seed)
    gate_fails = pooled_fails = 0
    for _ in range(comparisons):
        p = suite(rng, n)
        difficulty = np.log(p / (1 - p))
        base_p = 1 / (1 + np.exp(-(difficulty + rng.normal(0, noise, n))))
        cur_p = 1 / (1 + np.exp(-(difficulty + rng.normal(0, noise, n))))
        base, cur = sample(rng, base_p, repeats), sample(rng, cur_p, repeats)
        gate_fails += not run_gate(base, cur).passed
        lost = int((base & ~cur).sum())
        won = int((cur & ~base).sum())
        pooled_fails += lost > won and stats.mcnemar_exact(lost, won) < stats.ALPHA
    return Rate(gate_fails, comparisons), Rate(pooled_fails, comparisons)


def mde_row(n: int, repeats: int, mode: str = "significant") -> gate.Row:
    """The pass-rate row of a gate on n cases that all passed before and still pass."""
    ok = np.ones((n, repeats), dtype=bool)
    return run_gate(ok, ok, mode).rows[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 comparisons per row (a smoke test)")
    ap.add_argument("--aa", type=int, default=1000, help="A/A comparisons per row (default 1000)")
    ap.add_argument("--ab", type=int, default=400, help="A/B comparisons per row (default 400)")
    ap.add_argument("--aa2", type=int, default=500, help="A/A' comparisons per row (default 500)")
    ap.add_argument("--n", type=int, default=150, help="cases per suite (default 150)")
    args = ap.parse_args(argv)
    aa, ab, aa2 = (100, 100, 100) if args.quick else (args.aa, args.ab, args.aa2)
    start = time.perf_counter()
    print(f"# Gate calibration (alpha = {stats.ALPHA}, tolerance pass_rate:0, mode significant)\n")
    print(
        f"Per-case pass probabilities ~ Beta{BETA}; n = {args.n} cases; "
        f"comparisons per row: A/A {aa}, A/B {ab}, A/A' {aa2}.\n"
    )
    print("## False alarms (A/A: the same model twice)\n")
    print("| repeats | test | gate failed (false alarm) [95% CI] | p < alpha either way [95% CI] |")
    print("| --- | --- | --- | --- |")
    for r in (1, 3, 5):
        failed, sig = false_alarms(args.n, r, aa, seed=r)
        print(f"| {r} | {'McNemar' if r == 1 else 'sign-flip over cases'} | {failed} | {sig} |")
    print("\n## Power (A/B: the expected pass rate drops)\n")
    print("| repeats | drop 5 points | drop 10 points |")
    print("| --- | --- | --- |")
    for r in (1, 3, 5):
        cells = [str(power(args.n, r, d, ab, seed=100 + r)) for d in (0.05, 0.10)]
        print(f"| {r} | {' | '.join(cells)} |")
    print("\n## Why the case is the unit (A/A': exchangeable per-case probabilities)\n")
    print("| repeats | gate (case is the unit) | samples pooled as independent pairs |")
    print("| --- | --- | --- |")
    for r in (1, 3, 5):
        g, pooled = exchangeable_null(args.n, r, aa2, seed=200 + r)
        print(f"| {r} | {g} | {pooled} |")
    print("\n## Minimum detectable effect (smallest drop that can fail the gate)\n")
    print("| n | repeats | significant mode | strict mode |")
    print("| --- | --- | --- | --- |")
    for n in (5, 50, 150):
        for r in (1, 3, 5):
            sig, strict = mde_row(n, r), mde_row(n, r, "strict")
            cell = f"cannot fail: {sig.cannot_fail}" if sig.cannot_fail else f"{sig.mde:.4f}"
            print(f"| {n} | {r} | {cell} | {strict.mde:.4f} |")
    print(f"\n({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
