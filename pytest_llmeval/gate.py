"""Baseline file read/write and the comparison verdict (the CI quality gate).

Rules, in order (docs/gate_statistics.md explains the statistics):

1. An item that errored fails the gate: missing data cannot pass.
2. ``--fail-under METRIC=VALUE`` floors fail on the current value alone.
3. ``--tolerance METRIC:DELTA`` fails when the change is worse than DELTA and,
   in the default ``significant`` mode, the change is also statistically
   significant on the cases both runs share (exact McNemar test for the pass
   rate; a paired bootstrap 95% interval excluding zero for other metrics).
   ``strict`` mode fails on the tolerance alone.
4. A (test, model) with no baseline entry is reported, and fails only with
   ``--require-baseline``.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

FORMAT = "pytest-llmeval-baseline"
VERSION = 1
ALPHA = 0.05
BOOTSTRAP_SAMPLES = 2000
# Direction of "better" for known metrics; scores are higher-is-better.
LOWER_IS_BETTER = {"latency_p50", "latency_p95", "cost", "errors"}
METRIC_RE = re.compile(r"^(pass_rate|latency_p50|latency_p95|cost|score:[\w.-]+|[a-z_][\w.-]*)$")


@dataclass(frozen=True)
class Tolerance:
    """Allowed change of a metric: absolute (``-0.02``) or relative (``+25%``)."""

    metric: str
    delta: float
    relative: bool

    def allowed(self, base: float) -> float:
        """The worst acceptable signed change from ``base``."""
        return base * self.delta / 100.0 if self.relative else self.delta

    def __str__(self) -> str:
        return f"{self.metric}:{self.delta:+g}{'%' if self.relative else ''}"


@dataclass(frozen=True)
class Floor:
    """An absolute bound: ``pass_rate=0.8`` (at least) or ``latency_p95=2.0`` (at most)."""

    metric: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}={self.value:g}"


def parse_tolerance(text: str) -> Tolerance:
    """Parse ``METRIC:DELTA`` (``pass_rate:-0.02``, ``latency_p95:+25%``)."""
    m = re.match(r"^\s*([^:\s]+(?::[\w.-]+)?)\s*:\s*([+-]?\d+(?:\.\d+)?)\s*(%?)\s*$", text)
    if not m:
        raise ValueError(
            f"bad tolerance {text!r}: expected METRIC:DELTA, e.g. pass_rate:-0.02 or latency_p95:+25%"
        )
    metric, delta, pct = m.group(1), float(m.group(2)), bool(m.group(3))
    if not METRIC_RE.match(metric):
        raise ValueError(f"bad tolerance {text!r}: unknown metric name {metric!r}")
    lower_better = metric in LOWER_IS_BETTER
    if lower_better and delta < 0:
        raise ValueError(f"bad tolerance {text!r}: {metric} is lower-is-better, so its tolerance is an increase (+)")
    if not lower_better and delta > 0:
        raise ValueError(f"bad tolerance {text!r}: {metric} is higher-is-better, so its tolerance is a drop (-)")
    return Tolerance(metric, delta, pct)


def parse_floor(text: str) -> Floor:
    """Parse ``METRIC=VALUE`` (``pass_rate=0.8``)."""
    m = re.match(r"^\s*([^=\s]+)\s*=\s*(-?\d+(?:\.\d+)?)\s*$", text)
    if not m or not METRIC_RE.match(m.group(1)):
        raise ValueError(f"bad floor {text!r}: expected METRIC=VALUE, e.g. pass_rate=0.8")
    return Floor(m.group(1), float(m.group(2)))


# -- statistics -------------------------------------------------------------
def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def bootstrap_delta(base: list[float], cur: list[float], stat: str = "mean", seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap 95% interval of stat(cur) - stat(base) over shared cases."""
    import numpy as np

    b = np.asarray(base, dtype=float)
    c = np.asarray(cur, dtype=float)
    if len(b) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(b), size=(BOOTSTRAP_SAMPLES, len(b)))
    if stat == "mean":
        d = c[idx].mean(axis=1) - b[idx].mean(axis=1)
    elif stat.startswith("p"):
        q = float(stat[1:])
        d = np.percentile(c[idx], q, axis=1) - np.percentile(b[idx], q, axis=1)
    else:
        d = c[idx].sum(axis=1) - b[idx].sum(axis=1)
    lo, hi = np.percentile(d, [2.5, 97.5])
    return float(lo), float(hi)


# -- baseline file --------------------------------------------------------------
def _git_commit(cwd: str | Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON with stable key order; the old file stays until the new one is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read and check a baseline file; a corrupt or foreign file is a ConfigError saying what to do."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"baseline {p} does not exist; create it with --save-baseline {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"baseline {p} is not valid JSON ({e}); restore it from git or recreate it with --save-baseline"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"baseline {p} is not a pytest-llmeval baseline (missing \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise ConfigError(
            f"baseline {p} has format version {data.get('version')!r}; this plugin reads version {VERSION}. "
            "Recreate it with --save-baseline"
        )
    if not isinstance(data.get("entries"), dict):
        raise ConfigError(f"baseline {p}: key 'entries' must be a mapping of test -> model -> figures")
    return data


def _entry(agg: Any, dataset_hash: str | None, spec_hash: str | None) -> dict[str, Any]:
    return {
        "n": agg.n,
        "pass_rate": round(agg.pass_rate, 6),
        "scores": {k: round(v, 6) for k, v in agg.scores.items()},
        "latency_p50": _r(agg.latency_p50),
        "latency_p95": _r(agg.latency_p95),
        "cost": round(agg.cost, 8),
        "errors": agg.errors,
        "dataset_hash": dataset_hash,
        "model_spec_hash": spec_hash,
        "cases": {
            cid: {"passed": c["passed"], "score": _r(c.get("score")), "latency": _r(c.get("latency"))}
            for cid, c in sorted(agg.cases.items())
        },
    }


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 6)


def save_baseline(
    path: str | Path,
    aggregates: list[Any],
    datasets: dict[str, str],
    spec_hashes: dict[str, str | None],
    root: str | Path,
    force: bool = False,
) -> str:
    """Write the baseline for a run's aggregates; refuses a run with errors unless forced.

    Entries of other (test, model) pairs already in the file are kept.
    """
    from . import __version__

    errors = sum(a.errors for a in aggregates)
    if errors and not force:
        raise ConfigError(f"{errors} item(s) errored; a baseline from incomplete data is refused (--force-save-baseline)")
    p = Path(path)
    entries: dict[str, Any] = {}
    if p.is_file():
        try:
            entries = load_baseline(p)["entries"]
        except ConfigError:
            entries = {}
    for a in aggregates:
        entries.setdefault(a.test, {})[a.model] = _entry(a, datasets.get(a.test), spec_hashes.get(a.model))
    data = {
        "format": FORMAT,
        "version": VERSION,
        "metadata": {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "git_commit": _git_commit(root),
            "plugin_version": __version__,
        },
        "entries": entries,
    }
    write_json_atomic(p, data)
    return str(p)


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
        """The terminal table: metric, baseline, current, delta with interval, verdict."""
        from .redact import safe_terminal

        tw.write_sep("-", f"llmeval gate ({self.mode})")
        if self.rows:
            tw.write_line(f"{'test [model]':<48} {'metric':<22} {'baseline':>9} {'current':>9} {'delta [95% CI]':<28} verdict")
        for r in self.rows:
            name = safe_terminal(f"{r.test.split('::')[-1]} [{r.model}]", 48)
            delta = "" if r.delta is None else f"{r.delta:+.3f}"
            if r.ci is not None and not any(math.isnan(x) for x in r.ci):
                delta += f" [{r.ci[0]:+.3f}, {r.ci[1]:+.3f}]"
            if r.p_value is not None:
                delta += f" p={r.p_value:.3g}"
            tw.write_line(
                f"{name:<48} {r.metric:<22} {_fmt(r.baseline):>9} {_fmt(r.current):>9} {delta:<28} "
                f"{r.status}{(' (' + r.rule + ')') if r.rule else ''}",
                red=r.status == "FAIL",
            )
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


def compare(
    entries: dict[str, Any] | None,
    aggregates: list[Any],
    *,
    tolerances: list[Tolerance],
    floors: list[Floor],
    mode: str = "significant",
    require_baseline: bool = False,
    datasets: dict[str, str] | None = None,
) -> Verdict:
    """Compare current aggregates with baseline entries and decide."""
    v = Verdict(mode=mode)
    for a in aggregates:
        if a.errors:
            v.fail(f"{a.test} [{a.model}]: {a.errors} item(s) errored; missing data cannot pass the gate")
        for fl in floors:
            cur = _current_metric(a, fl.metric)
            lower_better = fl.metric in LOWER_IS_BETTER
            bad = cur is None or (cur > fl.value if lower_better else cur < fl.value)
            v.rows.append(Row(a.test, a.model, fl.metric, None, cur, status="FAIL" if bad else "ok", rule=f"floor {fl}"))
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
        if datasets and entry.get("dataset_hash") and datasets.get(a.test) not in (None, entry["dataset_hash"]):
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
        for tol in tolerances or [Tolerance("pass_rate", 0.0, False)]:
            v.rows.append(_check(a, entry, base_cases, shared, tol, mode, v))
    return v


def _paired(base_cases: dict[str, Any], cur_cases: dict[str, Any], shared: list[str], key: str) -> tuple[list[float], list[float]]:
    b, c = [], []
    for cid in shared:
        bv, cv = base_cases[cid].get(key), cur_cases[cid].get(key)
        if key == "passed":
            bv, cv = float(bool(bv)), float(bool(cv))
        if bv is None or cv is None:
            continue
        b.append(float(bv))
        c.append(float(cv))
    return b, c


def _discordant(base: list[float], cur: list[float]) -> tuple[int, int]:
    """(passed before and fail now, failed before and pass now) over paired pass flags."""
    lost = sum(1 for x, y in zip(base, cur, strict=True) if x and not y)
    won = sum(1 for x, y in zip(base, cur, strict=True) if y and not x)
    return lost, won


def _check(a: Any, entry: dict[str, Any], base_cases: dict[str, Any], shared: list[str], tol: Tolerance, mode: str, v: Verdict) -> Row:
    metric = tol.metric
    cur_cases = a.cases
    lower_better = metric in LOWER_IS_BETTER
    p_value = None
    ci = None
    if metric == "pass_rate" and shared:
        b, c = _paired(base_cases, cur_cases, shared, "passed")
        base_v, cur_v = sum(b) / len(b), sum(c) / len(c)
        p_value = mcnemar_exact(*_discordant(b, c))
        ci = bootstrap_delta(b, c)
        significant = p_value < ALPHA
    elif metric in ("latency_p50", "latency_p95") and shared:
        b, c = _paired(base_cases, cur_cases, shared, "latency")
        base_v, cur_v = _base_metric(entry, metric), _current_metric(a, metric)
        ci = bootstrap_delta(b, c, stat="p" + metric[-2:]) if len(b) >= 2 else None
        significant = ci is not None and (ci[0] > 0 if lower_better else ci[1] < 0)
    else:
        base_v, cur_v = _base_metric(entry, metric), _current_metric(a, metric)
        if metric not in ("cost",) and shared and metric not in LOWER_IS_BETTER:
            b, c = _paired(base_cases, cur_cases, shared, "score")
            if len(b) >= 2:
                ci = bootstrap_delta(b, c)
        # Cost is counted, not sampled: any change beyond tolerance is real.
        significant = metric == "cost" or ci is None or (ci[1] < 0 if not lower_better else ci[0] > 0)
    row = Row(a.test, a.model, metric, base_v, cur_v, ci=ci, p_value=p_value)
    if base_v is None or cur_v is None:
        row.status, row.rule = "info", "not measured in both runs"
        return row
    row.delta = cur_v - base_v
    allowed = tol.allowed(base_v)
    worse = row.delta > allowed + 1e-12 if lower_better else row.delta < allowed - 1e-12
    if worse and (mode == "strict" or significant):
        row.status = "FAIL"
        row.rule = f"tolerance {tol}" + ("" if mode == "strict" else (f", significant (p={p_value:.3g})" if p_value is not None else ", significant (95% CI)"))
        v.fail(f"{a.test} [{a.model}]: {metric} {_fmt(base_v)} -> {_fmt(cur_v)} exceeds {row.rule}")
    elif worse:
        row.status = "ok"
        row.rule = f"beyond tolerance {tol} but not significant" + (f" (p={p_value:.3g})" if p_value is not None else "")
    else:
        row.rule = f"within {tol}"
    return row


# -- model versus model in one run ------------------------------------------------
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
    only_model: int  # cases this model passes and the reference fails
    only_reference: int
    p_value: float
    ref_score: float | None = None
    score: float | None = None
    score_ci: tuple[float, float] | None = None

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
            f"McNemar p={_fmt_p(self.p_value)} ({self.only_model} won, {self.only_reference} lost)"
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
            rp, cp = _paired(ref.cases, a.cases, shared, "passed")
            lost, won = _discordant(rp, cp)
            mc = ModelComparison(
                test=test,
                reference=ref.model,
                model=a.model,
                n=len(shared),
                ref_pass_rate=sum(rp) / len(shared),
                pass_rate=sum(cp) / len(shared),
                pass_ci=bootstrap_delta(rp, cp),
                only_model=won,
                only_reference=lost,
                p_value=mcnemar_exact(lost, won),
            )
            rs, cs = _paired(ref.cases, a.cases, shared, "score")
            if rs:
                mc.ref_score, mc.score = sum(rs) / len(rs), sum(cs) / len(cs)
                mc.score_ci = bootstrap_delta(rs, cs)
            out.append(mc)
    return out
