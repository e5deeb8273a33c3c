"""The comparison verdict (the CI quality gate): tolerances, floors, rows and the decision.

Rules, in order (docs/gate_statistics.md explains the statistics):

1. An item that errored fails the gate: missing data cannot pass.
2. ``--fail-under METRIC=VALUE`` floors fail on the current value alone.
3. ``--tolerance METRIC:DELTA`` fails when the change is worse than DELTA and,
   in the default ``significant`` mode, the change is also statistically
   significant on the cases both runs share (exact McNemar test for the pass
   rate, or with repeats the exact sign-flip test on per-case pass fractions;
   a paired bootstrap 95% interval excluding zero for other metrics).
   ``strict`` mode fails on the tolerance alone. ``pass_rate:0`` applies unless
   a pass-rate tolerance is given.
4. A (test, model) with no baseline entry is reported, and fails only with
   ``--require-baseline``.

Every gated row carries its minimum detectable effect: the smallest change that
could make it fail with this many cases; a row that cannot fail at all says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .baseline import (  # noqa: F401  (re-exported: the gate's file format)
    FORMAT,
    VERSION,
    load_baseline,
    save_baseline,
    write_json_atomic,
)
from .comparison import (  # noqa: F401  (re-exported: the paired statistics the gate uses)
    ModelComparison,
    PairedPassRates,
    compare_models,
    paired_pass_rates,
    paired_values,
)
from .errors import ConfigError  # noqa: F401  (re-exported: what a bad gate input raises)
from .stats import (
    ALPHA,
    bootstrap_delta,
    min_significant_cases,
    minimum_detectable_drop,
)
from .thresholds import (  # noqa: F401  (re-exported: the names a gate option may use)
    JUDGE_KAPPA,
    LOWER_IS_BETTER,
    METRIC_PREFIXES,
    METRICS,
    Floor,
    MetricSpecError,
    Tolerance,
    check_metric_name,
    parse_floor,
    parse_tolerance,
    valid_metric_names,
)


# -- verdict -------------------------------------------------------------------
@dataclass
class Row:
    """One line of the gate table."""

    test: str
    model: str
    metric: str
    baseline: float | None
    current: float | None
    delta: float | None = None
    ci: tuple[float, float] | None = None
    p_value: float | None = None
    status: str = "ok"  # ok | FAIL | info
    rule: str = ""
    # The smallest worsening (in the metric's units) that could make this row fail with this
    # many shared cases, tolerance included; None when not gated or when it can never fail.
    mde: float | None = None
    cannot_fail: str = ""  # why this row can never fail; empty when it can
    method: str = ""  # McNemar | sign-flip over cases | bootstrap | counted


@dataclass
class Verdict:
    """The gate's decision and why."""

    passed: bool = True
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    mode: str = "significant"

    @classmethod
    def error(cls, message: str) -> Verdict:
        return cls(passed=False, reasons=[message])

    def fail(self, reason: str) -> None:
        self.passed = False
        self.reasons.append(reason)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "mode": self.mode,
            "reasons": self.reasons,
            "notes": self.notes,
            "rows": [r.__dict__ for r in self.rows],
        }

    def render(self, tw: Any) -> None:
        """The terminal table: metric, baseline, current, delta with interval, detectable effect, verdict.

        A row that fails is red; a row whose gate cannot fail is yellow, with the reason.
        """
        from .redact import safe_terminal

        tw.write_sep("-", f"llmeval gate ({self.mode})")
        if self.rows:
            tw.write_line(
                f"{'test [model]':<48} {'metric':<22} {'baseline':>9} {'current':>9} {'delta [95% CI]':<28} "
                f"{'mde':>6} verdict"
            )
        for r in self.rows:
            name = safe_terminal(f"{r.test.split('::')[-1]} [{r.model}]", 48)
            delta = "" if r.delta is None else f"{r.delta:+.3f}"
            if r.ci is not None and not any(math.isnan(x) for x in r.ci):
                delta += f" [{r.ci[0]:+.3f}, {r.ci[1]:+.3f}]"
            if r.p_value is not None:
                delta += f" p={r.p_value:.3g}"
            mde = "never" if r.cannot_fail else _fmt(r.mde)
            line = (
                f"{name:<48} {safe_terminal(r.metric, 22):<22} {_fmt(r.baseline):>9} {_fmt(r.current):>9} "
                f"{delta:<28} {mde:>6} {r.status}{(' (' + r.rule + ')') if r.rule else ''}"
            )
            if r.cannot_fail:
                line += f"; cannot fail: {r.cannot_fail}"
            tw.write_line(line, red=r.status == "FAIL", yellow=bool(r.cannot_fail) and r.status != "FAIL")
        for n in self.notes:
            tw.write_line(f"note: {safe_terminal(n, 400)}")
        if self.passed:
            tw.write_line("gate: PASSED", green=True, bold=True)
        else:
            for reason in self.reasons:
                tw.write_line(f"gate: FAILED: {safe_terminal(reason, 400)}", red=True, bold=True)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _current_metric(agg: Any, metric: str) -> float | None:
    return agg.metric(metric)


def _base_metric(entry: dict[str, Any], metric: str) -> float | None:
    if metric.startswith("score:"):
        return entry.get("scores", {}).get(metric[6:])
    if metric in entry and isinstance(entry[metric], (int, float)):
        return float(entry[metric])
    return entry.get("scores", {}).get(metric)


def _judge_floor(v: Verdict, a: Any, fl: Floor, kappa: float | None) -> None:
    """The judge behind ``a``'s judge scores must agree with people at least this much (quadratic kappa)."""
    bad = kappa is None or kappa < fl.value
    v.rows.append(
        Row(a.test, a.model, fl.metric, None, kappa, status="FAIL" if bad else "ok", rule=f"floor {fl}")
    )
    if kappa is None:
        v.fail(
            f"{a.test} [{a.model}]: the judge is unmeasured (no calibration file, or it failed): breaks {fl}"
        )
    elif bad:
        v.fail(f"{a.test} [{a.model}]: the judge's kappa with people = {_fmt(kappa)} breaks the floor {fl}")


def _unknown_metrics(aggregates: list[Any], names: list[str]) -> tuple[set[str], str]:
    """Tolerance/floor names that no aggregate of this run measured, and the gate error saying so."""
    scores = sorted({f"score:{s}" for a in aggregates for s in a.scores})
    unknown = {m for m in names if m not in METRICS and m not in scores} if aggregates else set()
    message = (
        f"unknown metric(s) {', '.join(sorted(unknown))} in the tolerances/floors; this run measured: "
        f"{', '.join([*METRICS, *scores])}"
    )
    return unknown, message


def compare(
    entries: dict[str, Any] | None,
    aggregates: list[Any],
    *,
    tolerances: list[Tolerance],
    floors: list[Floor],
    mode: str = "significant",
    require_baseline: bool = False,
    datasets: dict[str, str] | None = None,
    judge_kappa: dict[str, float | None] | None = None,
) -> Verdict:
    """Compare current aggregates with baseline entries and decide.

    ``pass_rate:0`` applies unless ``tolerances`` holds a pass-rate tolerance. A
    tolerance or floor naming a metric that no aggregate measured fails the gate,
    listing the names that exist.
    """
    v = Verdict(mode=mode)
    judge_kappa = judge_kappa or {}
    if any(f.metric == JUDGE_KAPPA for f in floors) and aggregates and not judge_kappa:
        v.fail(f"floor {JUDGE_KAPPA}: no judge graded anything in this run")
    unknown, message = _unknown_metrics(
        aggregates, [t.metric for t in tolerances] + [f.metric for f in floors if f.metric != JUDGE_KAPPA]
    )
    if unknown:
        v.fail(message)
        tolerances = [t for t in tolerances if t.metric not in unknown]
        floors = [f for f in floors if f.metric not in unknown]
    checks = list(tolerances)
    if not any(t.metric == "pass_rate" for t in checks):
        checks.insert(0, Tolerance("pass_rate", 0.0, False))
    for a in aggregates:
        if a.errors:
            v.fail(f"{a.test} [{a.model}]: {a.errors} item(s) errored; missing data cannot pass the gate")
        for fl in floors:
            if fl.metric == JUDGE_KAPPA:
                if a.test in judge_kappa:
                    _judge_floor(v, a, fl, judge_kappa[a.test])
                continue
            cur = _current_metric(a, fl.metric)
            lower_better = fl.metric in LOWER_IS_BETTER
            bad = cur is None or (cur > fl.value if lower_better else cur < fl.value)
            v.rows.append(
                Row(a.test, a.model, fl.metric, None, cur, status="FAIL" if bad else "ok", rule=f"floor {fl}")
            )
            if bad:
                v.fail(f"{a.test} [{a.model}]: {fl.metric} = {_fmt(cur)} breaks the floor {fl}")
        if entries is None:
            continue
        entry = entries.get(a.test, {}).get(a.model)
        if entry is None:
            msg = f"{a.test} [{a.model}]: no baseline entry"
            if require_baseline:
                v.fail(msg + " (--require-baseline)")
            else:
                v.notes.append(msg + "; not gated (save one with --save-baseline)")
            continue
        if (
            datasets
            and entry.get("dataset_hash")
            and datasets.get(a.test) not in (None, entry["dataset_hash"])
        ):
            v.notes.append(f"{a.test}: the dataset changed since the baseline (hash differs)")
        base_cases = entry.get("cases", {})
        shared = sorted(set(base_cases) & set(a.cases))
        added = sorted(set(a.cases) - set(base_cases))
        removed = sorted(set(base_cases) - set(a.cases))
        if added or removed:
            v.notes.append(
                f"{a.test} [{a.model}]: {len(added)} case(s) added ({', '.join(added[:5])}"
                f"{'...' if len(added) > 5 else ''}), {len(removed)} removed ({', '.join(removed[:5])}"
                f"{'...' if len(removed) > 5 else ''}); compared on {len(shared)} shared cases"
            )
        for tol in checks:
            v.rows.append(_check(a, entry, base_cases, shared, tol, mode, v))
    return v


def _pass_rate_reach(pr: PairedPassRates, allowed: float, mode: str) -> tuple[float | None, str]:
    """(minimum detectable drop, why the row cannot fail or "") for a pass-rate row.

    The drop must exceed the tolerance (``allowed`` <= 0) by at least the smallest
    change of the mean and, in significant mode, reach p < ALPHA, which takes at
    least min_significant_cases() cases moving the same way.
    """
    unit = min(pr.steps) / pr.n
    beyond = (math.floor(-allowed / unit + 1e-9) + 1) * unit
    if mode == "strict":
        if beyond > pr.base + 1e-9:
            return None, f"the tolerance allows a drop of the whole baseline pass rate ({pr.base:.3f})"
        return beyond, ""
    k = min_significant_cases(ALPHA)
    floor = minimum_detectable_drop(pr.steps, ALPHA)
    if floor is None:
        return None, (
            f"{pr.method} on {pr.n} shared case(s) can never reach p < {ALPHA:g} (it needs {k} cases "
            "to change one way); add cases or use --gate-mode strict"
        )
    if pr.droppable < k:
        return None, (
            f"only {pr.droppable} of {pr.n} shared cases passed in the baseline and {pr.method} needs {k} "
            f"to drop for p < {ALPHA:g}; add cases or use --gate-mode strict"
        )
    mde = max(floor, beyond)
    if mde > pr.base + 1e-9:
        return None, f"the smallest failing drop ({mde:.3f}) exceeds the baseline pass rate ({pr.base:.3f})"
    return mde, ""


def _check(
    a: Any,
    entry: dict[str, Any],
    base_cases: dict[str, Any],
    shared: list[str],
    tol: Tolerance,
    mode: str,
    v: Verdict,
) -> Row:
    metric = tol.metric
    cur_cases = a.cases
    lower_better = metric in LOWER_IS_BETTER
    p_value = None
    ci = None
    pr = None
    method = "bootstrap"
    if metric == "pass_rate" and shared:
        pr = paired_pass_rates(base_cases, cur_cases, shared)
        base_v, cur_v, p_value, ci, method = pr.base, pr.cur, pr.p_value, pr.ci, pr.method
        significant = p_value < ALPHA
    elif metric in ("latency_p50", "latency_p95") and shared:
        b, c = paired_values(base_cases, cur_cases, shared, "latency")
        base_v, cur_v = _base_metric(entry, metric), _current_metric(a, metric)
        ci = bootstrap_delta(b, c, stat="p" + metric[-2:]) if len(b) >= 2 else None
        significant = ci is not None and (ci[0] > 0 if lower_better else ci[1] < 0)
    else:
        base_v, cur_v = _base_metric(entry, metric), _current_metric(a, metric)
        if metric not in ("cost",) and shared and metric not in LOWER_IS_BETTER:
            b, c = paired_values(base_cases, cur_cases, shared, "score")
            if len(b) >= 2:
                ci = bootstrap_delta(b, c)
        # Cost is counted, not sampled: any change beyond tolerance is real.
        significant = metric == "cost" or ci is None or (ci[1] < 0 if not lower_better else ci[0] > 0)
        if metric == "cost":
            method = "counted"
        elif ci is None:
            method = "tolerance only"
    row = Row(a.test, a.model, metric, base_v, cur_v, ci=ci, p_value=p_value, method=method)
    if base_v is None or cur_v is None:
        row.status, row.rule = "info", "not measured in both runs"
        return row
    row.delta = cur_v - base_v
    allowed = tol.allowed(base_v)
    if pr is not None:
        row.mde, row.cannot_fail = _pass_rate_reach(pr, allowed, mode)
    elif mode != "strict" and metric in ("latency_p50", "latency_p95") and ci is None:
        row.cannot_fail = "fewer than 2 shared cases with a latency, so no interval; use --gate-mode strict"
    else:
        # A bootstrap interval can exclude zero for any consistent change, so only the tolerance bounds it.
        row.mde = abs(allowed)
    worse = row.delta > allowed + 1e-12 if lower_better else row.delta < allowed - 1e-12
    if worse and (mode == "strict" or significant):
        row.status = "FAIL"
        row.rule = f"tolerance {tol}" + (
            ""
            if mode == "strict"
            else (f", significant (p={p_value:.3g})" if p_value is not None else ", significant (95% CI)")
        )
        v.fail(f"{a.test} [{a.model}]: {metric} {_fmt(base_v)} -> {_fmt(cur_v)} exceeds {row.rule}")
    elif worse:
        row.status = "ok"
        row.rule = f"beyond tolerance {tol} but not significant" + (
            f" (p={p_value:.3g})" if p_value is not None else ""
        )
    else:
        row.rule = f"within {tol}"
    return row
