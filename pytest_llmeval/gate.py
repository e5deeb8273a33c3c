"""Baseline file read/write and the comparison verdict (the CI quality gate).

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

import difflib
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
from .stats import (
    ALPHA,
    bootstrap_delta,
    mcnemar_exact,
    min_significant_cases,
    minimum_detectable_drop,
    pass_fraction_test,
)

FORMAT = "pytest-llmeval-baseline"
VERSION = 1
# The metrics a tolerance or floor can name, with their direction ("lower" is better or
# "higher"); scores are named ``score:NAME`` and checked against the run's aggregates.
METRICS = {"pass_rate": "higher", "latency_p50": "lower", "latency_p95": "lower", "cost": "lower"}
METRIC_PREFIXES = ("score:",)
LOWER_IS_BETTER = {m for m, d in METRICS.items() if d == "lower"} | {"errors"}
_NAME_RE = re.compile(r"^[\w.-]+$")


class MetricSpecError(ConfigError, ValueError):
    """A tolerance or floor that names no metric, or is malformed.

    A ValueError, so that option parsing turns it into a usage error; a ConfigError,
    so that a bad ini value read at the end of a session becomes a gate error.
    """


def valid_metric_names() -> str:
    """The metric names a tolerance or floor accepts, for error messages."""
    return ", ".join([*METRICS, "score:NAME (a scorer's score, e.g. score:judge)"])


def check_metric_name(metric: str, what: str) -> None:
    """Raise :class:`MetricSpecError` unless ``metric`` is a fixed metric or ``score:NAME``.

    Score names are checked later, against the run's aggregates (:func:`compare`).
    """
    if metric in METRICS:
        return
    for prefix in METRIC_PREFIXES:
        if metric.startswith(prefix) and _NAME_RE.match(metric[len(prefix) :]):
            return
    close = difflib.get_close_matches(metric, list(METRICS), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise MetricSpecError(f"bad {what}: unknown metric {metric!r}{hint}; valid: {valid_metric_names()}")


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
    """Parse ``METRIC:DELTA`` (``pass_rate:-0.02``, ``latency_p95:+25%``).

    The metric must be one of :data:`METRICS` or ``score:NAME``; anything else is a
    :class:`MetricSpecError` listing the valid names.
    """
    m = re.match(r"^\s*([^:\s]+(?::[\w.-]+)?)\s*:\s*([+-]?\d+(?:\.\d+)?)\s*(%?)\s*$", text)
    if not m:
        raise MetricSpecError(
            f"bad tolerance {text!r}: expected METRIC:DELTA, e.g. pass_rate:-0.02 or latency_p95:+25%"
        )
    metric, delta, pct = m.group(1), float(m.group(2)), bool(m.group(3))
    check_metric_name(metric, f"tolerance {text!r}")
    lower_better = metric in LOWER_IS_BETTER
    if lower_better and delta < 0:
        raise MetricSpecError(
            f"bad tolerance {text!r}: {metric} is lower-is-better, so its tolerance is an increase (+)"
        )
    if not lower_better and delta > 0:
        raise MetricSpecError(
            f"bad tolerance {text!r}: {metric} is higher-is-better, so its tolerance is a drop (-)"
        )
    return Tolerance(metric, delta, pct)


def parse_floor(text: str) -> Floor:
    """Parse ``METRIC=VALUE`` (``pass_rate=0.8``); the metric is checked like a tolerance's."""
    m = re.match(r"^\s*([^=\s]+)\s*=\s*(-?\d+(?:\.\d+)?)\s*$", text)
    if not m:
        raise MetricSpecError(f"bad floor {text!r}: expected METRIC=VALUE, e.g. pass_rate=0.8")
    check_metric_name(m.group(1), f"floor {text!r}")
    return Floor(m.group(1), float(m.group(2)))


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


_OPT_NUM = {"type": ["number", "null"]}
_CASE_SCHEMA = {
    "type": "object",
    "required": ["passed"],
    "properties": {
        "passed": {"type": "boolean"},
        "score": _OPT_NUM,
        "latency": _OPT_NUM,
        "pass_fraction": {"type": "number", "minimum": 0, "maximum": 1},
        "samples": {"type": "integer", "minimum": 1},
    },
    "dependentRequired": {"samples": ["pass_fraction"], "pass_fraction": ["samples"]},
}
_ENTRY_SCHEMA = {
    "type": "object",
    "properties": {
        "n": {"type": "integer", "minimum": 0},
        "pass_rate": _OPT_NUM,
        "scores": {"type": "object", "additionalProperties": _OPT_NUM},
        "latency_p50": _OPT_NUM,
        "latency_p95": _OPT_NUM,
        "cost": _OPT_NUM,
        "errors": {"type": "integer", "minimum": 0},
        "dataset_hash": {"type": ["string", "null"]},
        "model_spec_hash": {"type": ["string", "null"]},
        "cases": {"type": "object", "additionalProperties": _CASE_SCHEMA},
    },
}
# What load_baseline accepts: the shape the gate reads. Unknown keys are allowed so that a
# newer plugin's additions do not break an older reader.
BASELINE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["format", "version", "entries"],
    "properties": {
        "format": {"const": FORMAT},
        "version": {"const": VERSION},
        "metadata": {"type": "object"},
        "entries": {
            "type": "object",
            "additionalProperties": {"type": "object", "additionalProperties": _ENTRY_SCHEMA},
        },
    },
}


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read and check a baseline file against :data:`BASELINE_SCHEMA`.

    A missing, corrupt, foreign or mis-shaped file is a ConfigError that names the
    file, the JSON path of the first bad value and what to do.
    """
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
        raise ConfigError(f'baseline {p} is not a pytest-llmeval baseline (missing "format": "{FORMAT}")')
    if data.get("version") != VERSION:
        raise ConfigError(
            f"baseline {p} has format version {data.get('version')!r}; this plugin reads version {VERSION}. "
            "Recreate it with --save-baseline"
        )
    problem = _schema_problem(data)
    if problem:
        raise ConfigError(
            f"baseline {p}: {problem}; fix that value or recreate the file with --save-baseline"
        )
    return data


def _schema_problem(data: Any) -> str | None:
    """The first (deepest, then first in path order) schema violation as "PATH: message", or None."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(BASELINE_SCHEMA)
    errors = list(validator.iter_errors(data))
    if not errors:
        return None
    err = min(errors, key=lambda e: (-len(e.absolute_path), [str(x) for x in e.absolute_path]))
    where = ".".join(str(x) for x in err.absolute_path) or "(top level)"
    # jsonschema quotes the offending value; a huge one (a whole entry) is cut.
    what = err.message if len(err.message) <= 200 else err.message[:200] + "..."
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{where}: {what}{more}"


def _entry(agg: Any, session: Any) -> dict[str, Any]:
    spec_hash = None
    try:
        spec_hash = session.spec(agg.model).spec_hash()
    except Exception:
        pass
    return {
        "n": agg.n,
        "pass_rate": round(agg.pass_rate, 6),
        "scores": {k: round(v, 6) for k, v in agg.scores.items()},
        "latency_p50": _r(agg.latency_p50),
        "latency_p95": _r(agg.latency_p95),
        "cost": round(agg.cost, 8),
        "errors": agg.errors,
        "dataset_hash": session.datasets.get(agg.test),
        "model_spec_hash": spec_hash,
        "cases": {cid: _case_entry(c) for cid, c in sorted(agg.cases.items())},
    }


def _case_entry(c: dict[str, Any]) -> dict[str, Any]:
    e = {"passed": c["passed"], "score": _r(c.get("score")), "latency": _r(c.get("latency"))}
    if "samples" in c:  # repeats: what the clustered test needs next time
        e["pass_fraction"], e["samples"] = _r(c["pass_fraction"]), c["samples"]
    return e


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 6)


def save_from_session(session: Any, path: str | Path, force: bool = False) -> str:
    """Write the baseline for this run's aggregates; refuses a run with errors unless forced.

    Entries of other (test, model) pairs already in the file are kept.
    """
    from . import __version__

    errors = sum(a.errors for a in session.aggregates)
    if errors and not force:
        raise ConfigError(f"{errors} item(s) errored; a baseline from incomplete data is refused (--force-save-baseline)")
    p = Path(path)
    entries: dict[str, Any] = {}
    if p.is_file():
        try:
            entries = load_baseline(p)["entries"]
        except ConfigError:
            entries = {}
    for a in session.aggregates:
        entries.setdefault(a.test, {})[a.model] = _entry(a, session)
    data = {
        "format": FORMAT,
        "version": VERSION,
        "metadata": {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "git_commit": _git_commit(session.config.rootpath),
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
) -> Verdict:
    """Compare current aggregates with baseline entries and decide.

    ``pass_rate:0`` applies unless ``tolerances`` holds a pass-rate tolerance. A
    tolerance or floor naming a metric that no aggregate measured fails the gate,
    listing the names that exist.
    """
    v = Verdict(mode=mode)
    unknown, message = _unknown_metrics(
        aggregates, [t.metric for t in tolerances] + [f.metric for f in floors]
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


def _paired(
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


def evaluate(session: Any, baseline_path: str | None) -> Verdict:
    """Run the gate for a session (reads options and ini keys)."""
    cfg = session.config
    tolerances = list(cfg.getoption("tolerance") or [])
    if not tolerances:
        tolerances = [parse_tolerance(t) for t in cfg.getini("llmeval_tolerance")]
    floors = list(cfg.getoption("fail_under") or [])
    if not floors:
        floors = [parse_floor(f) for f in cfg.getini("llmeval_fail_under")]
    mode = cfg.getoption("gate_mode") or "significant"
    entries = load_baseline(baseline_path)["entries"] if baseline_path else None
    return compare(
        entries,
        session.aggregates,
        tolerances=tolerances,
        floors=floors,
        mode=mode,
        require_baseline=cfg.getoption("require_baseline"),
        datasets=session.datasets,
    )


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
            rs, cs = _paired(ref.cases, a.cases, shared, "score")
            if rs:
                mc.ref_score, mc.score = sum(rs) / len(rs), sum(cs) / len(cs)
                mc.score_ci = bootstrap_delta(rs, cs)
            out.append(mc)
    return out
