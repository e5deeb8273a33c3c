"""The gate's statistics: paired tests, bootstrap intervals, detectable effects, pass@k.

Pure functions on plain numbers, shared by the baseline gate, the model-versus-model
comparison and the calibration benchmark (``bench/gate_calibration.py``);
docs/gate_statistics.md explains each choice. numpy is imported only where
resampling needs it.

Without repeats every case is one pass/fail pair and the pass-rate test is the
exact McNemar test. With repeats a case carries a pass fraction (k of N samples
passed) and the unit of pairing stays the case: the test is the exact sign-flip
(paired permutation) test on the per-case differences of pass fractions, which is
McNemar's test again when every fraction is 0 or 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

ALPHA = 0.05
BOOTSTRAP_SAMPLES = 2000
# Random sign assignments when the exact sign-flip distribution would be too large.
SIGN_FLIP_RESAMPLES = 20_000
# Largest exact table (cases with a change x support width) before Monte Carlo takes over;
# 150 cases with 5 samples each need 150 x 1,501.
SIGN_FLIP_EXACT_CELLS = 4_000_000


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def bootstrap_delta(
    base: list[float], cur: list[float], stat: str = "mean", seed: int = 0
) -> tuple[float, float]:
    """Paired bootstrap 95% interval of stat(cur) - stat(base) over shared cases.

    ``stat``: ``mean``, ``pNN`` (a percentile) or ``sum``. A case is resampled with
    both of its values, so the interval respects the pairing; with repeats the values
    are per-case pass fractions, so the resampled unit is still the case.
    """
    import numpy as np

    b = np.asarray(base, dtype=float)
    c = np.asarray(cur, dtype=float)
    if len(b) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    # Resample in blocks under ~128 KiB: the same draws as one (resamples x n) array, without
    # mapping and faulting in megabytes of fresh memory on every call.
    rows = max(1, 16384 // len(b))
    parts = []
    for start in range(0, BOOTSTRAP_SAMPLES, rows):
        idx = rng.integers(0, len(b), size=(min(rows, BOOTSTRAP_SAMPLES - start), len(b)))
        if stat == "mean":
            parts.append(c[idx].mean(axis=1) - b[idx].mean(axis=1))
        elif stat.startswith("p"):
            q = float(stat[1:])
            parts.append(np.percentile(c[idx], q, axis=1) - np.percentile(b[idx], q, axis=1))
        else:
            parts.append(c[idx].sum(axis=1) - b[idx].sum(axis=1))
    d = np.concatenate(parts)
    lo, hi = np.percentile(d, [2.5, 97.5])
    return float(lo), float(hi)


def sign_flip_test(
    diffs: Sequence[Fraction | int | float], *, resamples: int = SIGN_FLIP_RESAMPLES, seed: int = 0
) -> float:
    """Two-sided paired permutation (sign-flip) test of "no change" on per-case differences.

    Under the null hypothesis a case's two results are exchangeable, so each
    difference is as likely to have either sign; the p-value is the probability,
    over all 2**m sign assignments of the m non-zero differences, of a total at
    least as far from zero as the observed one. Exact for rational differences
    (pass fractions k/N, given as :class:`~fractions.Fraction`), computed on
    integers over their common denominator, so ties are exact; for 0/1
    differences it equals :func:`mcnemar_exact`. Floats, or a table larger than
    ``SIGN_FLIP_EXACT_CELLS``, use ``resamples`` random assignments with a fixed
    seed (verdicts stay reproducible), reported as (hits + 1) / (resamples + 1).
    """
    nonzero = [d for d in diffs if d != 0]
    if all(isinstance(d, (Fraction, int)) for d in nonzero):
        denom = math.lcm(*(Fraction(d).denominator for d in nonzero))
        return _sign_flip_integers([int(Fraction(d) * denom) for d in nonzero], denom, resamples, seed)
    return _sign_flip_monte_carlo([float(d) for d in nonzero], resamples, seed)


def pass_fraction_test(base: Sequence[tuple[int, int]], cur: Sequence[tuple[int, int]]) -> float:
    """:func:`sign_flip_test` on per-case pass fractions given as (passed samples, samples) pairs.

    The same p-value as ``sign_flip_test`` on the exact differences
    k_cur/N_cur - k_base/N_base, computed on integers over their common denominator.
    """
    denom = math.lcm(*(n for _, n in base), *(n for _, n in cur))
    ints = [kc * (denom // nc) - kb * (denom // nb) for (kb, nb), (kc, nc) in zip(base, cur, strict=True)]
    return _sign_flip_integers(ints, denom, SIGN_FLIP_RESAMPLES, 0)


def _sign_flip_integers(ints: list[int], denom: int, resamples: int, seed: int) -> float:
    """The sign-flip p-value of differences ints[i] / denom: exact when the table is small enough."""
    ints = [x for x in ints if x]
    if not ints:
        return 1.0
    if len(ints) * (2 * sum(abs(x) for x in ints) + 1) <= SIGN_FLIP_EXACT_CELLS:
        return _sign_flip_exact(ints)
    return _sign_flip_monte_carlo([x / denom for x in ints], resamples, seed)


def _sign_flip_exact(ints: list[int]) -> float:
    import numpy as np

    total = sum(abs(x) for x in ints)
    observed = abs(sum(ints))
    # pmf[total + s] = P(sum of randomly signed |x_i| == s), built one case at a time.
    pmf = np.zeros(2 * total + 1)
    pmf[total] = 1.0
    reach = 0
    for x in sorted((abs(x) for x in ints), reverse=True):
        lo, hi = total - reach, total + reach + 1
        cur = pmf[lo:hi].copy()
        pmf[lo:hi] = 0.0
        pmf[lo - x : hi - x] += 0.5 * cur
        pmf[lo + x : hi + x] += 0.5 * cur
        reach += x
    # Two-sided: |S| >= |observed|; the distribution is symmetric about zero.
    tail = pmf[: total - observed + 1].sum()
    return min(1.0, float(2 * tail) if observed else 1.0)


def _sign_flip_monte_carlo(diffs: list[float], resamples: int, seed: int) -> float:
    import numpy as np

    mags = np.abs(np.asarray(diffs, dtype=float))
    observed = abs(sum(diffs))
    slack = 1e-9 * max(1.0, float(mags.sum()))  # float sums of the same signs must tie
    rng = np.random.default_rng(seed)
    hits, done = 0, 0
    chunk = max(1, min(resamples, 2_000_000 // len(mags)))
    while done < resamples:
        size = min(chunk, resamples - done)
        signs = rng.integers(0, 2, size=(size, len(mags)), dtype=np.int8) * 2 - 1
        hits += int((np.abs(signs @ mags) >= observed - slack).sum())
        done += size
    return (hits + 1) / (resamples + 1)


def min_significant_cases(alpha: float = ALPHA) -> int:
    """The fewest cases that must all move one way for an exact paired test to reach p < alpha.

    When k cases change and all in the same direction, McNemar's and the sign-flip
    test's two-sided p-value is 2 * 0.5**k, whatever the sizes of the changes; no
    outcome on fewer changed cases is more extreme. At alpha = 0.05 this is 6.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    k = 1
    while 2 * 0.5**k >= alpha:
        k += 1
    return k


def minimum_detectable_drop(steps: Sequence[float], alpha: float = ALPHA) -> float | None:
    """The smallest drop of the mean pass fraction that an exact paired test can call significant.

    ``steps`` holds, per shared case, the smallest non-zero change its pass fraction
    can make (1 without repeats; 1/lcm(N_base, N_cur) with N samples per case). The
    most extreme outcome on k changed cases has p = 2 * 0.5**k, so the smallest
    significant drop moves the :func:`min_significant_cases` cases with the smallest
    steps by one step each. None when there are fewer cases than that: the test can
    never reach p < alpha. This is the best case (every change in one direction); a
    drop of this size is detected only when nothing moves the other way.
    """
    k = min_significant_cases(alpha)
    if len(steps) < k or not steps:
        return None
    return sum(sorted(steps)[:k]) / len(steps)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of P(at least one of k samples passes) from c passes in n samples."""
    if not 0 < k <= n:
        raise ValueError(f"pass@k needs 0 < k <= n, got k={k}, n={n}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_all_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass^k, P(all k samples pass), from c passes in n samples."""
    if not 0 < k <= n:
        raise ValueError(f"pass^k needs 0 < k <= n, got k={k}, n={n}")
    return math.comb(c, k) / math.comb(n, k)
