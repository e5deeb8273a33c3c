"""The end of a run: records -> aggregates, paired model comparisons, gate verdict -> :class:`RunOutcome`.

Built once, at ``pytest_sessionfinish``, in the controller. Every output (the
terminal summary, the HTML report, the metrics store and run folder, the
tracer) receives this finished, immutable object; none reads the live session.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .console import invocation_path, option_or_ini
from .errors import ConfigError
from .gate import ModelComparison, Verdict, compare_models
from .results import Aggregate, CaseResult, aggregate


@dataclass(frozen=True)
class GenerationStats:
    """The scheduler's counters at the end of a run."""

    submitted: int = 0
    done: int = 0
    cached: int = 0
    failed: int = 0
    retries: int = 0
    spent: float = 0.0
    first_result_s: float | None = None  # seconds from the first submission to the first result

    @classmethod
    def of(cls, stats: Any) -> GenerationStats | None:
        """A snapshot of ``scheduler.Stats`` (None when nothing was generated)."""
        if stats is None:
            return None
        first = None if stats.first_done is None else stats.first_done - stats.started
        return cls(stats.submitted, stats.done, stats.cached, stats.failed, stats.retries, stats.spent, first)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("submitted", "done", "cached", "failed", "retries", "spent")}


@dataclass(frozen=True)
class RunOutcome:
    """Everything a run produced, as its outputs need it."""

    run_id: str
    started: float  # seconds since the epoch
    ended: float
    models: tuple[str, ...]  # the selected models, in command-line order
    model_specs: dict[str, dict[str, Any]]  # name -> type, weights, adapter, spec hash
    datasets: dict[str, str]  # test -> dataset sha256
    records: tuple[CaseResult, ...]
    aggregates: tuple[Aggregate, ...] = ()
    model_comparisons: tuple[ModelComparison, ...] = ()
    verdict: Verdict | None = None
    baseline_note: str | None = None  # why the run was not gated, when it was not
    judge_agreement: str | None = None
    saved_baseline: str | None = None
    save_error: str | None = None
    report_path: Path | None = None
    run_dir: Path | None = None
    stats: GenerationStats | None = None
    exit_status: int = 0
    complete: bool = True  # False when the run stopped early (Ctrl-C, -x, an internal error)
    estimate_lines: tuple[str, ...] = field(default=())

    @functools.cached_property
    def results(self) -> dict[str, CaseResult]:
        """The records by node id."""
        return {r.nodeid: r for r in self.records}

    @property
    def duration_s(self) -> float:
        return self.ended - self.started


@dataclass(frozen=True)
class GateResult:
    """What the gate step decided: a verdict (or why there is none) and the saved baseline."""

    verdict: Verdict | None = None
    note: str | None = None
    saved: str | None = None
    save_error: str | None = None


def run_gate(
    config: pytest.Config, aggregates: list[Aggregate], datasets: dict[str, str], spec_hashes: dict[str, str | None]
) -> GateResult:
    """Compare with the baseline (and floors), and save a baseline when asked."""
    from . import gate

    baseline_path = option_or_ini(config, "baseline", "llmeval_baseline")
    save = config.getoption("save_baseline")
    explicit_baseline = bool(config.getoption("baseline"))
    note = None
    if baseline_path:
        baseline_path = invocation_path(config, baseline_path)
    if baseline_path and not explicit_baseline and not Path(baseline_path).is_file():
        # An ini default that does not exist yet is not an error: nothing to compare with.
        note = f"no baseline at {baseline_path}; not gated"
        baseline_path = None
    if baseline_path and save is not None and not Path(baseline_path).is_file():
        baseline_path = None
    verdict = None
    if baseline_path:
        try:
            verdict = gate.evaluate(config, aggregates, datasets, baseline_path)
        except ConfigError as e:
            verdict = Verdict.error(str(e))
    elif config.getoption("fail_under") or config.getini("llmeval_fail_under"):
        verdict = gate.evaluate(config, aggregates, datasets, None)
    saved = save_error = None
    if save is not None:
        target = invocation_path(config, save or option_or_ini(config, "baseline", "llmeval_baseline") or "evals/baseline.json")
        try:
            saved = gate.save_baseline(
                target, aggregates, datasets, spec_hashes, config.rootpath,
                force=config.getoption("force_save_baseline"),
            )
        except ConfigError as e:
            save_error = str(e)
    return GateResult(verdict, note, saved, save_error)


def exit_status_after_gate(status: int, result: GateResult) -> int:
    """With a gate, its verdict is the exit status: case-level misses alone do not fail the session."""
    v = result.verdict
    if v is not None:
        if not v.passed:
            status = pytest.ExitCode.TESTS_FAILED
        elif status == pytest.ExitCode.TESTS_FAILED:
            status = pytest.ExitCode.OK
    if result.save_error is not None:
        status = pytest.ExitCode.TESTS_FAILED
    return int(status)


def judge_agreement(config: pytest.Config, judges_used: dict[str, str | None], aggregates: list[Aggregate], specs: Any) -> str | None:
    """How far the run's judge agreed with people, when a judge graded anything."""
    from .judge import agreement_note, resolve_judge_model

    if judges_used:
        model, rubric = next(iter(judges_used.items()))
        return agreement_note(config.rootpath, model, rubric)
    if not any("judge" in a.scores for a in aggregates):
        return None
    try:  # xdist: the judge ran in the workers; the controller works out which one
        return agreement_note(config.rootpath, resolve_judge_model(config, specs()))
    except Exception:
        return None


def build_outcome(
    *,
    config: pytest.Config,
    session: pytest.Session,
    run_id: str,
    started: float,
    models: list[str],
    model_specs: dict[str, dict[str, Any]],
    datasets: dict[str, str],
    records: list[CaseResult],
    judges_used: dict[str, str | None],
    specs: Any,
    stats: Any,
    report_path: Path | None,
    run_dir: Path | None,
    estimate_lines: list[str],
) -> RunOutcome:
    """Aggregate, compare and gate the run's records into its :class:`RunOutcome`."""
    aggregates = aggregate(records) if records else []
    comparisons = compare_models(aggregates, models) if aggregates else []
    gate_result = GateResult()
    status = int(session.exitstatus)
    if records:
        hashes = {m: (s.get("spec_hash") if s else None) for m, s in model_specs.items()}
        gate_result = run_gate(config, aggregates, datasets, hashes)
        status = exit_status_after_gate(status, gate_result)
    return RunOutcome(
        run_id=run_id,
        started=started,
        ended=time.time(),
        models=tuple(models),
        model_specs=dict(model_specs),
        datasets=dict(datasets),
        records=tuple(records),
        aggregates=tuple(aggregates),
        model_comparisons=tuple(comparisons),
        verdict=gate_result.verdict,
        baseline_note=gate_result.note,
        judge_agreement=judge_agreement(config, judges_used, aggregates, specs) if records else None,
        saved_baseline=gate_result.saved,
        save_error=gate_result.save_error,
        report_path=report_path,
        run_dir=run_dir,
        stats=GenerationStats.of(stats),
        exit_status=status,
        complete=status in (0, 1) and not session.shouldstop,
        estimate_lines=tuple(estimate_lines),
    )
