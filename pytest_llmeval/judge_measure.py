"""How far this run's judge agrees with people, measured in the run on its rubric's calibration file.

At the end of a run (in the controller), every judge that graded something (a
:class:`~pytest_llmeval.judge_stage.JudgeUse`) whose rubric has a calibration file is run on that
file's answers through the run's scheduler and response cache (a warm run pays nothing): the same
prompts, parameters and parser as the ``judge`` fixture, and the same number of samples as the run's
verdicts. Figures: quadratic-weighted kappa with a seeded bootstrap 95% interval, exact and within-one
agreement, and with samples the self-consistency of the samples. A judge without a calibration file
is "unmeasured", and says so wherever its scores appear.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .agreement import agreement, kappa_interval, self_consistency
from .backends.base import Request
from .judge import FIELD_ORDER, JudgeError, build_messages, combine, parse_verdict, request_params

UNMEASURED = "unmeasured"


@dataclass(frozen=True)
class JudgeMeasure:
    """One judge's agreement with people (or why it is unmeasured), and the tests it graded."""

    model: str
    rubric: str  # relative to the rootdir when inside it
    calibration: str | None  # None: no calibration file, unmeasured
    tests: tuple[str, ...] = ()
    samples: int = 1
    n: int = 0
    kappa: float | None = None
    kappa_low: float | None = None
    kappa_high: float | None = None
    exact: float | None = None
    within_one: float | None = None
    all_agree: float | None = None  # self-consistency: share of items whose samples all agree
    mean_stdev: float | None = None
    parse_failures: int = 0
    error: str | None = None  # why the measurement failed
    offline: str | None = None  # unmeasured here: the calibration CLI's last figures for this model, if any

    @property
    def measured(self) -> bool:
        return self.calibration is not None and self.error is None

    def label(self) -> str:
        """``smollm2: kappa 0.12 (95% CI -0.10 to 0.35), exact 0.21, within-1 0.55 (n=42, FILE)`` or unmeasured."""
        if self.calibration is None:
            text = f"{self.model}: {UNMEASURED} (no judge_calibration.jsonl beside {self.rubric})"
            return text + (f"; offline calibration: {self.offline}" if self.offline else "")
        if self.error is not None:
            return f"{self.model}: {UNMEASURED} (calibration on {self.calibration} failed: {self.error})"
        ci = f" (95% CI {_f(self.kappa_low)} to {_f(self.kappa_high)})" if self.kappa_low is not None else ""
        text = f"{self.model}: kappa {_f(self.kappa)}{ci}, exact {_f(self.exact)}, within-1 {_f(self.within_one)}"
        if self.samples > 1:
            text += f", self-consistency {_f(self.all_agree)} (majority of {self.samples} samples)"
        if self.parse_failures:
            text += f", {self.parse_failures} unreadable verdict(s)"
        return text + f" (n={self.n}, {self.calibration})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tests": list(self.tests), "label": self.label()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JudgeMeasure:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: (tuple(v) if k == "tests" else v) for k, v in d.items() if k in known})

    def baseline_entry(self) -> dict[str, Any]:
        """What a baseline entry keeps about the judge of its scores."""
        keys = ("model", "calibration", "n", "kappa", "kappa_low", "kappa_high", "exact", "within_one")
        return {"measured": self.measured, **{k: getattr(self, k) for k in keys}}


def _f(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def _shown(path: str | None, root: Path) -> str | None:
    if path is None:
        return None
    try:
        return os.path.relpath(path, root) if Path(path).resolve().is_relative_to(root.resolve()) else path
    except (OSError, ValueError):
        return path


def measure(scheduler: Any, specs: dict[str, Any], use: Any, root: Path) -> JudgeMeasure:
    """Grade ``use``'s calibration answers with its judge (through ``scheduler``) and measure agreement."""
    from .calibration import load_calibration
    from .errors import LLMEvalError
    from .judge import load_rubric

    shown = {
        "model": use.model,
        "rubric": _shown(use.rubric_path, root) or use.rubric_path,
        "calibration": _shown(use.calibration, root),
        "tests": tuple(sorted(use.tests)),
        "samples": use.samples,
    }
    if use.calibration is None:
        from .judge import agreement_note, calibration_path

        offline = None
        if calibration_path(root, use.model).is_file():
            try:
                offline = agreement_note(root, use.model, load_rubric(use.rubric_path))
            except LLMEvalError:
                offline = agreement_note(root, use.model)
        return JudgeMeasure(**shown, offline=offline)
    try:
        rubric = load_rubric(use.rubric_path)
        rows = load_calibration(use.calibration)
        plan: list[int | None] = [None] if use.samples <= 1 else list(range(1, use.samples + 1))
        base = specs[use.model].params
        jobs = []
        for r, row in enumerate(rows):
            messages = build_messages(rubric, row["answer"], {k: row[k] for k in FIELD_ORDER if k in row})
            for s, sample in enumerate(plan):
                request = Request.make(messages, **{**base, **request_params(sample)})
                key = f"__calibration__/{use.model}/{use.rubric_sha256}/{len(plan)}/{r}/{s}"
                jobs.append((key, use.model, request))
        jobs.sort(
            key=lambda j: j[0].rsplit("/", 1)[1]
        )  # sample by sample: a batch backend batches across rows
        jobs = [j for j in jobs if scheduler.job(j[0]) is None]
        scheduler.submit_many(jobs)
        replies: dict[tuple[int, int], str] = {}
        for r in range(len(rows)):
            for s in range(len(plan)):
                key = f"__calibration__/{use.model}/{use.rubric_sha256}/{len(plan)}/{r}/{s}"
                replies[(r, s)] = scheduler.jobs[key].future.result().text
    except (LLMEvalError, OSError) as e:
        return JudgeMeasure(**shown, error=str(e).splitlines()[0][:300])
    except Exception as e:  # a cancelled future, a backend bug: the run goes on, the judge is unmeasured
        return JudgeMeasure(**shown, error=f"{type(e).__name__}: {str(e)[:200]}")
    human, judged, spread, failures = [], [], [], 0
    for r, row in enumerate(rows):
        scores = []
        for s in range(len(plan)):
            try:
                scores.append(parse_verdict(replies[(r, s)]).score)
            except JudgeError:
                failures += 1
        spread.append(scores)
        if scores:  # an item without a readable verdict is left out (counted as unreadable)
            human.append(int(row["human_score"]))
            judged.append(int(round(combine(scores, use.aggregate))))
    fig = agreement(human, judged)
    ci = kappa_interval(human, judged)
    sc = self_consistency(spread) if len(plan) > 1 else {"all_agree": None, "mean_stdev": None}
    return JudgeMeasure(
        **shown,
        n=fig["n"],
        kappa=fig["kappa_quadratic"],
        kappa_low=ci[0] if ci else None,
        kappa_high=ci[1] if ci else None,
        exact=fig["exact"],
        within_one=fig["within_one"],
        all_agree=sc["all_agree"],
        mean_stdev=sc["mean_stdev"],
        parse_failures=failures,
    )


def label_for(measures: tuple[JudgeMeasure, ...], test: str) -> str | None:
    """The label of the judge that graded ``test`` (several judges: each, joined)."""
    labels = [m.label() for m in measures if test in m.tests]
    return "; ".join(labels) if labels else None


def kappa_by_test(measures: tuple[JudgeMeasure, ...]) -> dict[str, float | None]:
    """For the judge_kappa floor: each judged test's lowest judge kappa (None when any judge is unmeasured)."""
    out: dict[str, float | None] = {}
    for m in measures:
        value = m.kappa if m.measured else None
        for t in m.tests:
            if t in out and (out[t] is None or value is None):
                out[t] = None
            else:
                out[t] = value if t not in out else min(out[t], value)  # type: ignore[type-var]
    return out


def judge_metrics(measures: tuple[JudgeMeasure, ...], agg: Any) -> dict[str, float | None]:
    """The metrics-database rows of the judge behind ``agg``'s judge scores (values NULL when unmeasured)."""
    if "judge" not in getattr(agg, "scores", {}):
        return {}
    for m in measures:
        if agg.test in m.tests:
            return {
                "judge_kappa": m.kappa if m.measured else None,
                "judge_kappa_low": m.kappa_low if m.measured else None,
                "judge_kappa_high": m.kappa_high if m.measured else None,
                "judge_exact": m.exact if m.measured else None,
                "judge_within_one": m.within_one if m.measured else None,
            }
    return {}
