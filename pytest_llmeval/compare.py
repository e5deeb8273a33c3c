"""Two stored runs side by side: per-metric deltas with the gate's statistics, and the changed cases.

Takes the dicts :func:`pytest_llmeval.store.load_run` returns. ``llmeval compare``
prints :func:`render_text` and writes :func:`pytest_llmeval.compare_page.render_page`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# The gate's statistics, so a comparison and the gate agree on every figure.
from .gate import LOWER_IS_BETTER
from .redact import safe_terminal
from .results import percentile
from .stats import bootstrap_delta, mcnemar_exact, pass_fraction_test

# How a case's outcome moved between the runs (skipped cases are left out of a comparison).
PASS_TO_FAIL, FAIL_TO_PASS, OTHER_CHANGE = "pass-fail", "fail-pass", "other"
CHANGE_LABELS = {
    PASS_TO_FAIL: "pass → fail",
    FAIL_TO_PASS: "fail → pass",
    OTHER_CHANGE: "other (failed ↔ error)",
}


@dataclass
class MetricDelta:
    """One metric of one (test, model) in two runs, over the cases both ran."""

    metric: str
    baseline: float | None
    current: float | None
    delta: float | None = None
    ci: tuple[float, float] | None = None
    p_value: float | None = None

    def significant(self) -> bool:
        """The 95% interval excludes zero, or the McNemar p-value is below 0.05."""
        if self.p_value is not None:
            return self.p_value < 0.05
        return self.ci is not None and (self.ci[0] > 0 or self.ci[1] < 0)

    def better(self) -> bool | None:
        """Whether the change is an improvement (None: no change)."""
        if not self.delta:
            return None
        base = self.metric.removeprefix("score:")
        return (self.delta < 0) if base in LOWER_IS_BETTER else (self.delta > 0)


@dataclass
class PairComparison:
    """A (test, model) that both runs have."""

    test: str
    model: str
    shared: int
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    metrics: list[MetricDelta] = field(default_factory=list)
    # case_id, baseline outcome, current outcome, change (PASS_TO_FAIL, FAIL_TO_PASS or OTHER_CHANGE)
    changed: list[dict[str, Any]] = field(default_factory=list)


def change_kind(baseline: str, current: str) -> str:
    """PASS_TO_FAIL, FAIL_TO_PASS or OTHER_CHANGE for two different outcomes."""
    if baseline == "passed":
        return PASS_TO_FAIL
    if current == "passed":
        return FAIL_TO_PASS
    return OTHER_CHANGE


def results_by_case(run: dict[str, Any]) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """(test, model) -> case id -> result row, skipped results left out.

    With repeats a case's sample rows become one row: its pass fraction (``passes`` of
    ``samples``), its outcome by the default policy, the means of its scores and latencies,
    the sum of its costs.
    """
    rows: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for r in run["results"]:
        if r["outcome"] != "skipped":
            rows.setdefault((r["test"], r["model"]), {}).setdefault(r["case_id"], []).append(r)
    return {key: {c: _one_row(rs) for c, rs in cases.items()} for key, cases in rows.items()}


def _one_row(rs: list[dict[str, Any]]) -> dict[str, Any]:
    if len(rs) == 1:
        return rs[0]
    from .results import outcome_from_samples

    rs = sorted(rs, key=lambda r: r.get("sample") or 0)
    by_name: dict[str, list[float]] = {}
    for r in rs:
        for name, v in _scores(r).items():
            by_name.setdefault(name, []).append(v)
    lats = [r["latency_s"] for r in rs if r["latency_s"] is not None]
    return {
        **rs[0],
        "outcome": outcome_from_samples([r["outcome"] for r in rs]),
        "passes": sum(r["outcome"] == "passed" for r in rs),
        "samples": len(rs),
        "scores": [{"name": n, "value": sum(v) / len(v)} for n, v in by_name.items()],
        "latency_s": sum(lats) / len(lats) if lats else None,
        "cost": sum(r["cost"] or 0.0 for r in rs),
    }


def _passes(r: dict[str, Any]) -> tuple[int, int]:
    """(passed samples, samples) of a case's row: (0 or 1, 1) without repeats."""
    if "passes" in r:
        return int(r["passes"]), int(r["samples"])
    return int(r["outcome"] == "passed"), 1


def _scores(r: dict[str, Any]) -> dict[str, float]:
    return {str(s["name"]): float(s["value"]) for s in r.get("scores") or [] if s.get("value") is not None}


def _delta(metric: str, b: list[float], c: list[float], stat: str) -> MetricDelta:
    if not b:
        return MetricDelta(metric, None, None)
    if stat == "mean":
        bv, cv = sum(b) / len(b), sum(c) / len(c)
    elif stat == "sum":
        bv, cv = sum(b), sum(c)
    else:
        bv, cv = percentile(b, float(stat[1:])), percentile(c, float(stat[1:]))
    md = MetricDelta(metric, bv, cv, None if bv is None or cv is None else cv - bv)
    if len(b) >= 2 and stat != "sum":
        lo, hi = bootstrap_delta(b, c, stat=stat)
        if not (math.isnan(lo) or math.isnan(hi)):
            md.ci = (lo, hi)
    return md


def compare_runs(base: dict[str, Any], cur: dict[str, Any]) -> tuple[list[PairComparison], list[str]]:
    """Per-metric deltas per (test, model) on shared cases, with the gate's statistics.

    Pass rate: exact McNemar p-value on the discordant cases and a paired
    bootstrap 95% interval; scores and latency quantiles: paired bootstrap
    intervals; cost: the plain difference. Also the cases whose outcome changed.
    """
    b_all, c_all = results_by_case(base), results_by_case(cur)
    notes = []
    for key in b_all.keys() - c_all.keys():
        notes.append(f"{key[0]} [{key[1]}] is only in the baseline run")
    for key in c_all.keys() - b_all.keys():
        notes.append(f"{key[0]} [{key[1]}] is only in the current run")
    out = []
    for key in [k for k in c_all if k in b_all]:
        bc, cc = b_all[key], c_all[key]
        shared = sorted(bc.keys() & cc.keys())
        pc = PairComparison(
            key[0], key[1], len(shared), sorted(cc.keys() - bc.keys()), sorted(bc.keys() - cc.keys())
        )
        bk, ck = [_passes(bc[c]) for c in shared], [_passes(cc[c]) for c in shared]
        bp, cp = [k / n for k, n in bk], [k / n for k, n in ck]
        md = _delta("pass_rate", bp, cp, "mean")
        if shared and any(n > 1 for _, n in bk + ck):  # repeats: the case is the unit (stats.py)
            md.p_value = pass_fraction_test(bk, ck)
        elif shared:
            md.p_value = mcnemar_exact(
                sum(1 for x, y in zip(bp, cp, strict=True) if x and not y),
                sum(1 for x, y in zip(bp, cp, strict=True) if y and not x),
            )
        pc.metrics.append(md)
        names: dict[str, None] = {}
        for c in shared:
            for n in [*_scores(bc[c]), *_scores(cc[c])]:
                names.setdefault(n, None)
        for name in names:
            pairs = [(_scores(bc[c]).get(name), _scores(cc[c]).get(name)) for c in shared]
            pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
            pc.metrics.append(_delta(f"score:{name}", [x for x, _ in pairs], [y for _, y in pairs], "mean"))
        lat = [(bc[c]["latency_s"], cc[c]["latency_s"]) for c in shared]
        lat = [(x, y) for x, y in lat if x is not None and y is not None]
        for q in ("50", "95"):
            pc.metrics.append(_delta(f"latency_p{q}", [x for x, _ in lat], [y for _, y in lat], f"p{q}"))
        pc.metrics.append(
            _delta(
                "cost", [bc[c]["cost"] or 0.0 for c in shared], [cc[c]["cost"] or 0.0 for c in shared], "sum"
            )
        )
        pc.changed = [
            {
                "case_id": c,
                "baseline": bc[c]["outcome"],
                "current": cc[c]["outcome"],
                "change": change_kind(bc[c]["outcome"], cc[c]["outcome"]),
            }
            for c in shared
            if bc[c]["outcome"] != cc[c]["outcome"]
        ]
        out.append(pc)
    return out, notes


# -- the terminal table ----------------------------------------------------------------
def fmt_value(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def fmt_delta(v: float | None) -> str:
    return "-" if v is None else f"{v:+.3f}"


def fmt_stats(m: MetricDelta) -> str:
    """``[lo, hi]`` and ``p=... (McNemar)`` where the metric has them."""
    stats = "" if m.ci is None else f"[{m.ci[0]:+.3f}, {m.ci[1]:+.3f}]"
    if m.p_value is not None:
        stats += f" p={m.p_value:.3g} (McNemar)"
    return stats.strip()


def run_label(run: dict[str, Any]) -> str:
    """``ID started WHEN models A, B`` (and ``(incomplete)``), terminal-safe."""
    models = ", ".join(run.get("models") or []) or "-"
    state = "" if run.get("complete") else " (incomplete)"
    return f"{run['id']} started {run['started']} models {safe_terminal(models, 80)}{state}"


def render_text(
    base: dict[str, Any], cur: dict[str, Any], pairs: list[PairComparison], notes: list[str]
) -> str:
    """The comparison as the terminal table ``llmeval compare`` prints."""
    lines = [
        f"baseline: {run_label(base['run'])}",
        f"current:  {run_label(cur['run'])}",
    ]
    for pc in pairs:
        lines.append("")
        extra = ""
        if pc.added or pc.removed:
            extra = f"; {len(pc.added)} case(s) only in current, {len(pc.removed)} only in baseline"
        lines.append(f"{safe_terminal(pc.test)} [{safe_terminal(pc.model)}]: {pc.shared} shared cases{extra}")
        lines.append(f"  {'metric':<28} {'baseline':>9} {'current':>9} {'delta':>8}  95% CI / p-value")
        for m in pc.metrics:
            lines.append(
                f"  {safe_terminal(m.metric, 28):<28} {fmt_value(m.baseline):>9} {fmt_value(m.current):>9} "
                f"{fmt_delta(m.delta):>8}  {fmt_stats(m)}".rstrip()
            )
        if pc.changed:
            lines.append(f"  changed cases ({len(pc.changed)}):")
            for ch in pc.changed:
                lines.append(f"    {safe_terminal(ch['case_id'], 80)}: {ch['baseline']} -> {ch['current']}")
        else:
            lines.append("  no case changed outcome")
    for n in notes:
        lines.append(f"note: {safe_terminal(n, 300)}")
    return "\n".join(lines) + "\n"
