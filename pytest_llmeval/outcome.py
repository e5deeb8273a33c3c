"""The end of a run: records -> aggregates, paired model comparisons, gate verdict -> :class:`RunOutcome`.

Built once, at ``pytest_sessionfinish``, in the controller, or by ``llmeval merge``
from the folders of shard runs, by the same :func:`build_outcome`. Every output
(the terminal summary, the HTML report, the metrics store and run folder, the
tracer) receives this finished, immutable object; none reads the live session.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .console import invocation_path, option_or_ini
from .errors import ConfigError
from .flips import CaseFlip, case_flips
from .gate import Floor, ModelComparison, Tolerance, Verdict, compare_models
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
    near_misses: int = 0  # cache misses whose request was cached for another model identity
    near_miss_note: str | None = None  # why, for the first of them

    @classmethod
    def of(cls, stats: Any) -> GenerationStats | None:
        """A snapshot of ``scheduler.Stats`` (None when nothing was generated); a snapshot passes through."""
        if stats is None or isinstance(stats, GenerationStats):
            return stats
        first = None if stats.first_done is None else stats.first_done - stats.started
        counts = (stats.submitted, stats.done, stats.cached, stats.failed, stats.retries, stats.spent)
        return cls(*counts, first, getattr(stats, "near_misses", 0), getattr(stats, "near_miss_note", None))

    @classmethod
    def total(cls, parts: list[GenerationStats | dict[str, Any] | None]) -> GenerationStats | None:
        """The sum of several processes' counters (xdist workers send theirs as dicts)."""
        snaps = [p if isinstance(p, GenerationStats) else cls(**p) for p in parts if p]
        if not snaps:
            return None
        firsts = [s.first_result_s for s in snaps if s.first_result_s is not None]
        notes = [s.near_miss_note for s in snaps if s.near_miss_note]
        counted = ("submitted", "done", "cached", "failed", "retries", "spent", "near_misses")
        return cls(
            **{k: sum(getattr(s, k) for s in snaps) for k in counted},
            first_result_s=min(firsts) if firsts else None,
            near_miss_note=notes[0] if notes else None,
        )

    def to_dict(self) -> dict[str, Any]:
        keys = ("submitted", "done", "cached", "failed", "retries", "spent", "near_misses")
        return {k: getattr(self, k) for k in keys}

    def as_worker_output(self) -> dict[str, Any]:
        """Every field, as plain values: what an xdist worker sends the controller."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


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
    flips: tuple[CaseFlip, ...] = ()  # cases whose outcome changed against the baseline (flips.py)
    judges: tuple[
        Any, ...
    ] = ()  # judge_measure.JudgeMeasure: each judge's agreement with people, or unmeasured

    @functools.cached_property
    def results(self) -> dict[str, CaseResult]:
        """The records by node id."""
        return {r.nodeid: r for r in self.records}

    @property
    def duration_s(self) -> float:
        return self.ended - self.started


@dataclass(frozen=True)
class GateOptions:
    """What the gate step reads, resolved: from a run's options and ini keys (:meth:`from_config`),
    or from ``llmeval merge``'s arguments, so that a merged run is gated by the same code."""

    baseline: str | None = None  # the baseline file to compare with
    baseline_explicit: bool = False  # given on the command line: a missing file is an error, not a note
    save: str | None = None  # where to save a baseline from this run; None: do not save
    force_save: bool = False
    tolerances: tuple[Tolerance, ...] = ()
    floors: tuple[Floor, ...] = ()
    mode: str = "significant"
    require_baseline: bool = False
    root: Path = Path(".")  # the repository whose commit a saved baseline records
    deferred: str | None = None  # why this run is not gated here (a shard: the merge gates)
    error: str | None = None  # a bad ini tolerance or floor: the gate fails with it

    @classmethod
    def from_config(cls, config: pytest.Config) -> GateOptions:
        """The gate options of a pytest run: command line first, then the ini keys."""
        from .gate import parse_floor, parse_tolerance

        baseline = option_or_ini(config, "baseline", "llmeval_baseline") or None
        save = config.getoption("save_baseline")
        target = None
        if save is not None:
            target = invocation_path(config, save or baseline or "evals/baseline.json")
        error = None
        tolerances = list(config.getoption("tolerance") or [])
        floors = list(config.getoption("fail_under") or [])
        try:
            tolerances = tolerances or [parse_tolerance(t) for t in config.getini("llmeval_tolerance")]
            floors = floors or [parse_floor(f) for f in config.getini("llmeval_fail_under")]
        except ValueError as e:
            error = f"ini key llmeval_tolerance / llmeval_fail_under: {e}"
        shard = config.getoption("llmeval_shard", None)
        return cls(
            baseline=invocation_path(config, baseline) if baseline else None,
            baseline_explicit=bool(config.getoption("baseline")),
            save=target,
            force_save=bool(config.getoption("force_save_baseline")),
            tolerances=tuple(tolerances),
            floors=tuple(floors),
            mode=config.getoption("gate_mode") or "significant",
            require_baseline=bool(config.getoption("require_baseline")),
            root=Path(config.rootpath),
            deferred=None
            if shard is None
            else f"shard {shard}: not gated here; `llmeval merge` gates the merged run",
            error=error,
        )


@dataclass(frozen=True)
class GateResult:
    """What the gate step decided: a verdict (or why there is none) and the saved baseline."""

    verdict: Verdict | None = None
    note: str | None = None
    saved: str | None = None
    save_error: str | None = None
    deferred: bool = False  # a shard: the verdict belongs to the merged run
    flips: tuple[CaseFlip, ...] = ()


def run_gate(
    options: GateOptions,
    aggregates: list[Aggregate],
    datasets: dict[str, str],
    spec_hashes: dict[str, str | None],
    judges: tuple[Any, ...] = (),
) -> GateResult:
    """Compare with the baseline (and floors), and save a baseline when asked.

    ``judges`` (JudgeMeasure): the judge_kappa floor reads their kappa; a saved baseline keeps them.
    """
    from . import gate
    from .judge_measure import kappa_by_test

    if options.deferred:
        return GateResult(note=options.deferred, deferred=True)
    baseline_path = options.baseline
    note = None
    if baseline_path and not options.baseline_explicit and not Path(baseline_path).is_file():
        # An ini default that does not exist yet is not an error: nothing to compare with.
        note = f"no baseline at {baseline_path}; not gated"
        baseline_path = None
    if baseline_path and options.save is not None and not Path(baseline_path).is_file():
        baseline_path = None
    verdict = None
    flips: tuple[CaseFlip, ...] = ()
    checks = {
        "tolerances": list(options.tolerances),
        "floors": list(options.floors),
        "mode": options.mode,
        "require_baseline": options.require_baseline,
        "datasets": datasets,
        "judge_kappa": kappa_by_test(judges),
    }
    if options.error:
        verdict = Verdict.error(options.error)
    elif baseline_path:
        try:
            entries = gate.load_baseline(baseline_path)["entries"]
            verdict = gate.compare(entries, aggregates, **checks)
            flips = tuple(case_flips(entries, aggregates))
        except ConfigError as e:
            verdict = Verdict.error(str(e))
    elif options.floors:
        verdict = gate.compare(None, aggregates, **checks)
    saved = save_error = None
    if options.save is not None:
        try:
            saved = gate.save_baseline(
                options.save,
                aggregates,
                datasets,
                spec_hashes,
                options.root,
                force=options.force_save,
                judges={t: m.baseline_entry() for m in judges for t in m.tests},
            )
        except ConfigError as e:
            save_error = str(e)
    return GateResult(verdict, note, saved, save_error, flips=flips)


def exit_status_after_gate(status: int, result: GateResult, errors: int = 0) -> int:
    """With a gate, its verdict is the exit status: case-level misses alone do not fail the session.

    A shard defers its verdict to the merge: its case-level misses do not fail it either, but
    ``errors`` (items without a result) do, since no merged gate can pass them.
    """
    v = result.verdict
    if v is not None:
        if not v.passed:
            status = pytest.ExitCode.TESTS_FAILED
        elif status == pytest.ExitCode.TESTS_FAILED:
            status = pytest.ExitCode.OK
    elif result.deferred and status == pytest.ExitCode.TESTS_FAILED and not errors:
        status = pytest.ExitCode.OK
    if result.save_error is not None:
        status = pytest.ExitCode.TESTS_FAILED
    return int(status)


def judge_agreement(
    config: pytest.Config, judges_used: dict[str, str | None], aggregates: list[Aggregate], specs: Any
) -> str | None:
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


def canonical_order(records: list[CaseResult], models: list[str]) -> list[CaseResult]:
    """The records by test, then model (in ``models`` order), then case id and sample.

    The outcome's figures (float sums, the paired bootstrap intervals of the model
    comparisons) depend on the order of the records they are computed from. In this
    order they are a function of the set of records alone: the same whether the
    records arrived from one process, from xdist workers in any order, or from the
    folders of several shards (:mod:`pytest_llmeval.merge`).
    """
    rank = {m: i for i, m in enumerate(models)}
    return sorted(
        records,
        key=lambda r: (
            r.test,
            rank.get(r.model, len(rank)),
            r.model,
            r.case_id,
            getattr(r, "sample", 0),
            r.nodeid,
        ),
    )


def build_outcome(
    *,
    gate: GateOptions,
    status: int,
    stopped: bool,
    run_id: str,
    started: float,
    models: list[str],
    model_specs: dict[str, dict[str, Any]],
    datasets: dict[str, str],
    records: list[CaseResult],
    judge_note: Callable[[list[Aggregate]], str | None] | None,
    stats: Any,
    report_path: Path | None,
    run_dir: Path | None,
    estimate_lines: list[str],
    judges: tuple[Any, ...] = (),
) -> RunOutcome:
    """Aggregate, compare and gate the run's records into its :class:`RunOutcome`.

    A pytest run (``session.py``) and a merge of shard runs (``merge.py``) both come
    here: ``status`` is the exit status before the gate, ``stopped`` whether the run
    ended early, ``judge_note`` how far the run's judge agrees with people.
    """
    records = canonical_order(records, models)
    aggregates = aggregate(records) if records else []
    comparisons = compare_models(aggregates, models) if aggregates else []
    gate_result = GateResult()
    if records:
        hashes = {m: (s.get("spec_hash") if s else None) for m, s in model_specs.items()}
        gate_result = run_gate(gate, aggregates, datasets, hashes, judges)
        status = exit_status_after_gate(status, gate_result, sum(a.errors for a in aggregates))
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
        judge_agreement=(
            "; ".join(m.label() for m in judges)
            if records and judges
            else judge_note(aggregates)
            if records and judge_note is not None
            else None
        ),
        saved_baseline=gate_result.saved,
        save_error=gate_result.save_error,
        report_path=report_path,
        run_dir=run_dir,
        stats=GenerationStats.of(stats),
        exit_status=status,
        complete=status in (0, 1) and not stopped,
        estimate_lines=tuple(estimate_lines),
        flips=gate_result.flips,
        judges=tuple(judges),
    )
