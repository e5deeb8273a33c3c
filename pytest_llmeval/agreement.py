"""How far a judge agrees with people: exact and within-one agreement, quadratic-weighted kappa,
Spearman's rho, and the self-consistency of sampled verdicts (numpy only)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def exact_agreement(human: list[int], judge: list[int]) -> float | None:
    """Share of items where the judge gave the human's score."""
    if not human:
        return None
    return float(np.mean(np.asarray(human) == np.asarray(judge)))


def within_one_agreement(human: list[int], judge: list[int]) -> float | None:
    """Share of items where the judge is at most one point from the human."""
    if not human:
        return None
    return float(np.mean(np.abs(np.asarray(human) - np.asarray(judge)) <= 1))


def quadratic_weighted_kappa(human: list[int], judge: list[int], low: int = 1, high: int = 5) -> float | None:
    """Cohen's kappa with quadratic weights on the scale ``low..high``.

    1 is perfect agreement, 0 is what independent raters with the same score
    distributions would reach by chance. None when undefined (e.g. both raters
    gave one and the same score to everything).
    """
    if not human:
        return None
    k = high - low + 1
    h = np.asarray(human) - low
    j = np.asarray(judge) - low
    observed = np.zeros((k, k))
    np.add.at(observed, (h, j), 1)
    expected = np.outer(np.bincount(h, minlength=k), np.bincount(j, minlength=k)) / len(h)
    idx = np.arange(k)
    weights = (idx[:, None] - idx[None, :]) ** 2 / (k - 1) ** 2
    denom = float((weights * expected).sum())
    if denom == 0:
        return None
    return float(1.0 - (weights * observed).sum() / denom)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties get their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(human: list[int], judge: list[int]) -> float | None:
    """Spearman's rho (Pearson correlation of average ranks). None if either side is constant."""
    if len(human) < 2:
        return None
    a = _ranks(np.asarray(human, dtype=float))
    b = _ranks(np.asarray(judge, dtype=float))
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    if denom == 0:
        return None
    return float((a * b).sum() / denom)


def agreement(human: list[int], judge: list[int]) -> dict[str, Any]:
    """All agreement figures for paired scores."""
    return {
        "n": len(human),
        "exact": exact_agreement(human, judge),
        "within_one": within_one_agreement(human, judge),
        "kappa_quadratic": quadratic_weighted_kappa(human, judge),
        "spearman": spearman(human, judge),
    }


def self_consistency(samples: list[list[int]]) -> dict[str, Any]:
    """Mean per-item population stdev of repeated verdicts, and the share of items whose
    repeated verdicts all agree (items with at least two parsed samples)."""
    rows = [s for s in samples if len(s) >= 2]
    if not rows:
        return {"n": 0, "mean_stdev": None, "all_agree": None}
    return {
        "n": len(rows),
        "mean_stdev": float(np.mean([np.std(s) for s in rows])),
        "all_agree": float(np.mean([len(set(s)) == 1 for s in rows])),
    }


def kappa_interval(
    human: list[int], judge: list[int], n_boot: int = 2000, seed: int = 20, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the quadratic-weighted kappa (items resampled with replacement).

    Seeded, so a run and its rerun (or its xdist twin) report the same interval; resamples on
    which kappa is undefined are left out. None with fewer than two items or no defined resample.
    """
    if len(human) < 2:
        return None
    rng = np.random.default_rng(seed)
    h, j = np.asarray(human), np.asarray(judge)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(h), len(h))
        k = quadratic_weighted_kappa(h[idx].tolist(), j[idx].tolist())
        if k is not None:
            values.append(k)
    if not values:
        return None
    tail = (1.0 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))
