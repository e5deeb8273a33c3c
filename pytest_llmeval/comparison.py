"""Two sets of per-case results on their shared cases: the paired pass-rate test and interval,
and the in-run comparison of each further model with the first.

Without repeats each case is pass/fail and the test is exact McNemar; with
repeats each case contributes its pass fraction and the test is the exact
sign-flip test over cases (docs/gate_statistics.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .stats import bootstrap_delta, mcnemar_exact, pass_fraction_test


def paired_values(
    base_cases: dict[str, Any], cur_cases: dict[str, Any], shared: list[str], key: str
) -> tuple[list[float], list[float]]:
    b, c = [], []
    for cid in shared:
        bv, cv = base_cases[cid].get(key), cur_cases[cid].get(key)
        if bv is None or cv is None:
            continue
        b.append(float(bv))
        c.append(float(cv))
    return b, c


def _counts(case: dict[str, Any]) -> tuple[int, int]:
    """(passed samples, samples) of a case entry; an entry from a run without repeats is one sample."""
    n, frac = case.get("samples"), case.get("pass_fraction")
    if isinstance(n, int) and n >= 1 and isinstance(frac, (int, float)):
        return round(frac * n), n
    return int(bool(case.get("passed"))), 1


@dataclass
class PairedPassRates:
    """Two runs' pass rates on their shared cases, with the paired test and 95% interval.

    Without repeats each case is pass/fail and the test is exact McNemar; when any
    case has more than one sample in either run, each case contributes its pass
    fraction and the test is the exact sign-flip test over cases.
    """

    n: int
    base: float
    cur: float
    p_value: float
    ci: tuple[float, float]
    worse: int  # cases whose pass fraction fell
    better: int
    method: str
    steps: list[float]  # per case, the smallest change its pass fraction can make
    droppable: int  # cases that passed at least once in the baseline (only these can drop)


def paired_pass_rates(
    base_cases: dict[str, Any], cur_cases: dict[str, Any], shared: list[str]
) -> PairedPassRates:
    """Compare per-case pass outcomes (or pass fractions, with repeats) on ``shared`` cases."""
    bc = [_counts(base_cases[c]) for c in shared]
    cc = [_counts(cur_cases[c]) for c in shared]
    bf = [k / n for k, n in bc]
    cf = [k / n for k, n in cc]
    worse = sum(1 for x, y in zip(bf, cf, strict=True) if y < x)
    better = sum(1 for x, y in zip(bf, cf, strict=True) if y > x)
    if any(n > 1 for _, n in bc + cc):
        p = pass_fraction_test(bc, cc)
        method = "sign-flip over cases"
        steps = [1 / math.lcm(nb, nc) for (_, nb), (_, nc) in zip(bc, cc, strict=True)]
    else:
        p, method, steps = mcnemar_exact(worse, better), "McNemar", [1.0] * len(shared)
    return PairedPassRates(
        n=len(shared),
        base=sum(bf) / len(bf),
        cur=sum(cf) / len(cf),
        p_value=p,
        ci=bootstrap_delta(bf, cf),
        worse=worse,
        better=better,
        method=method,
        steps=steps,
        droppable=sum(1 for k, _ in bc if k > 0),
    )


@dataclass
class ModelComparison:
    """``model`` against the run's reference model on the cases of ``test`` that both ran.

    The same statistics as the gate: exact McNemar on the discordant pass/fail
    pairs, paired bootstrap 95% intervals for the pass-rate and main-score deltas.
    """

    test: str
    reference: str
    model: str
    n: int
    ref_pass_rate: float
    pass_rate: float
    pass_ci: tuple[float, float]
    only_model: int  # cases this model passes and the reference fails (with repeats: passes more often)
    only_reference: int
    p_value: float
    ref_score: float | None = None
    score: float | None = None
    score_ci: tuple[float, float] | None = None
    method: str = "McNemar"  # or "sign-flip over cases" when either model has repeats

    @property
    def delta(self) -> float:
        return self.pass_rate - self.ref_pass_rate

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["delta"] = self.delta
        return d

    def line(self) -> str:
        text = (
            f"{self.test}: {self.model} vs {self.reference} on {self.n} shared cases: pass rate "
            f"{self.pass_rate:.1%} vs {self.ref_pass_rate:.1%}, delta {self.delta * 100:+.1f} points "
            f"[95% CI {self.pass_ci[0] * 100:+.1f}, {self.pass_ci[1] * 100:+.1f}], "
            f"{'McNemar' if self.method == 'McNemar' else 'sign-flip'} p={_fmt_p(self.p_value)} "
            f"({self.only_model} won, {self.only_reference} lost)"
        )
        if self.score is not None and self.ref_score is not None and self.score_ci is not None:
            text += (
                f"; main score {self.score:.3f} vs {self.ref_score:.3f} "
                f"[95% CI {self.score_ci[0]:+.3f}, {self.score_ci[1]:+.3f}]"
            )
        return text


def _fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def compare_models(aggregates: list[Any], order: list[str] | None = None) -> list[ModelComparison]:
    """Each further model of a test against the first (``--model A --model B``: B vs A).

    ``order`` is the models in command-line order; without it, first-seen order.
    """
    rank = {m: i for i, m in enumerate(order or [])}
    by_test: dict[str, list[Any]] = {}
    for a in sorted(aggregates, key=lambda a: rank.get(a.model, len(rank))):
        by_test.setdefault(a.test, []).append(a)
    out = []
    for test, aggs in by_test.items():
        ref = aggs[0]
        for a in aggs[1:]:
            shared = [c for c in ref.cases if c in a.cases]
            if not shared:
                continue
            pr = paired_pass_rates(ref.cases, a.cases, shared)
            mc = ModelComparison(
                test=test,
                reference=ref.model,
                model=a.model,
                n=pr.n,
                ref_pass_rate=pr.base,
                pass_rate=pr.cur,
                pass_ci=pr.ci,
                only_model=pr.better,
                only_reference=pr.worse,
                p_value=pr.p_value,
                method=pr.method,
            )
            rs, cs = paired_values(ref.cases, a.cases, shared, "score")
            if rs:
                mc.ref_score, mc.score = sum(rs) / len(rs), sum(cs) / len(cs)
                mc.score_ci = bootstrap_delta(rs, cs)
            out.append(mc)
    return out
