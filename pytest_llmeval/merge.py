"""``llmeval merge``: the run folders of a sharded run -> one run, gated as if it had run whole.

Each shard (``pytest --shard K/N ...``) leaves a run folder: ``results.jsonl`` (a
record per item) and ``summary.json`` (the run: its shard, dataset hashes, models
with their spec hashes and cache identities, git commit). :func:`load_shard` reads
one; :func:`check_together` refuses folders that do not make one run, naming what
differs; :func:`merge` builds the merged :class:`~pytest_llmeval.outcome.RunOutcome`
with the same :func:`~pytest_llmeval.outcome.build_outcome` a live run uses, so its
aggregates, paired comparisons, gate rows (deltas, intervals, p-values) and
verdict are those of the same cases run unsharded; :func:`write_merged` writes
it as one run: a run folder, a database run and an HTML report.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .outcome import GateOptions, GenerationStats, RunOutcome, build_outcome
from .results import CaseResult
from .shards import Shard, shard_of
from .store import SUMMARY_FORMAT, SUMMARY_VERSION, MetricsStore


class MergeError(Exception):
    """The folders cannot be merged; the message says which and why."""


@dataclass(frozen=True)
class ShardRun:
    """One shard's run folder, read."""

    path: Path
    run: dict[str, Any]  # summary.json's "run"
    summary: dict[str, Any]
    records: tuple[CaseResult, ...]

    @property
    def shard(self) -> Shard | None:
        s = self.run.get("shard")
        return Shard(int(s["index"]), int(s["count"])) if isinstance(s, dict) else None

    @property
    def label(self) -> str:
        return f"{self.path} (shard {self.shard})" if self.shard else str(self.path)


_FIELDS = {f.name for f in fields(CaseResult)}


def load_shard(path: str | Path) -> ShardRun:
    """Read a run folder's summary.json and results.jsonl; a MergeError says what is wrong with it."""
    p = Path(path)
    summary_path = p / "summary.json"
    if not p.is_dir():
        raise MergeError(f"{p} is not a folder; pass the run folders of the shards (their --output)")
    if not summary_path.is_file():
        raise MergeError(
            f"{p} has no summary.json: the run did not finish (a run writes it at its end); rerun that shard"
        )
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise MergeError(f"{summary_path} is not valid JSON ({e}); rerun that shard") from None
    if not isinstance(summary, dict) or summary.get("format") != SUMMARY_FORMAT:
        raise MergeError(f"{summary_path} is not a pytest-llmeval run summary")
    if summary.get("version") != SUMMARY_VERSION:
        raise MergeError(
            f"{summary_path} has format version {summary.get('version')!r}; this pytest-llmeval reads "
            f"version {SUMMARY_VERSION}"
        )
    run = summary.get("run") or {}
    records = []
    results_path = p / str((summary.get("files") or {}).get("results") or "results.jsonl")
    try:
        lines = [] if run.get("n_results") == 0 else results_path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise MergeError(f"{results_path} cannot be read ({e}); rerun that shard") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            records.append(CaseResult(**{k: v for k, v in data.items() if k in _FIELDS}))
        except (ValueError, TypeError) as e:
            raise MergeError(f"{results_path}:{lineno}: not a result record ({e})") from None
    if run.get("n_results") is not None and len(records) != run["n_results"]:
        raise MergeError(
            f"{results_path} holds {len(records)} records, but {summary_path} counts {run['n_results']}: "
            "the folder is incomplete; rerun that shard"
        )
    return ShardRun(p, run, summary, tuple(records))


def _differs(runs: Sequence[ShardRun], what: str, value: Callable[[ShardRun], Any]) -> str | None:
    """A line saying how ``value`` differs between the runs ("WHAT differs: X in A; Y in B"), or None."""
    seen: dict[str, list[str]] = {}
    for r in runs:
        seen.setdefault(json.dumps(value(r), sort_keys=True, default=str), []).append(r.label)
    if len(seen) < 2:
        return None
    parts = [f"{json.loads(v)!r} in {', '.join(labels)}" for v, labels in seen.items()]
    return f"{what} differs: " + "; ".join(parts)


def check_together(runs: Sequence[ShardRun]) -> None:
    """Raise a MergeError listing every reason why ``runs`` are not the shards of one run."""
    problems: list[str] = []
    unsharded = [r for r in runs if r.shard is None]
    for r in unsharded:
        problems.append(f"{r.path} is not a shard run (pytest was not given --shard K/N)")
    sharded = [r for r in runs if r.shard is not None]
    if sharded:
        counts = _differs(sharded, "the number of shards", lambda r: r.shard.count if r.shard else None)
        if counts:
            problems.append(counts)
        else:
            count = sharded[0].shard.count  # type: ignore[union-attr]
            by_index: dict[int, list[ShardRun]] = {}
            for r in sharded:
                by_index.setdefault(r.shard.index, []).append(r)  # type: ignore[union-attr]
            for index, rs in sorted(by_index.items()):
                if len(rs) > 1:
                    problems.append(
                        f"shard {index}/{count} is given {len(rs)} times: {', '.join(str(r.path) for r in rs)}"
                    )
            missing = [f"{i}/{count}" for i in range(1, count + 1) if i not in by_index]
            if missing:
                have = ", ".join(f"{i}/{count}" for i in sorted(by_index))
                problems.append(
                    f"shard {', '.join(missing)} missing (given: {have}); pass every shard's run folder"
                )
    for r in runs:
        if not r.run.get("complete"):
            problems.append(
                f"{r.label} did not complete (exit status {r.run.get('exit_status')}): its cases are partly "
                "missing; rerun that shard"
            )
    for what, value in (
        ("the models", lambda r: r.run.get("models")),
        ("the git commit", lambda r: r.run.get("git_commit")),
    ):
        msg = _differs(runs, what, value)
        if msg:
            problems.append(msg)
    tests = sorted({t for r in runs for t in (r.run.get("datasets") or {})})
    for test in tests:
        msg = _differs(runs, f"the dataset of {test}", lambda r, t=test: (r.run.get("datasets") or {}).get(t))
        if msg:
            problems.append(msg)
    models = sorted({m for r in runs for m in (r.run.get("model_specs") or {})})
    for model in models:
        for key, what in (("spec_hash", "spec hash"), ("cache_identity", "cache identity")):
            msg = _differs(
                runs,
                f"model {model}'s {what}",
                lambda r, m=model, k=key: ((r.run.get("model_specs") or {}).get(m) or {}).get(k),
            )
            if msg:
                problems.append(msg)
    problems += _record_problems(sharded)
    if problems:
        raise MergeError("these runs are not the shards of one run:\n  - " + "\n  - ".join(problems))
    if not any(r.records for r in runs):
        raise MergeError("no shard holds a result: did the shards collect the eval suite?")


def _record_problems(runs: Sequence[ShardRun]) -> list[str]:
    """Records in the wrong shard's folder, and cases that two folders both hold."""
    problems: list[str] = []
    owner: dict[tuple[str, str, str, int], ShardRun] = {}
    for r in runs:
        shard = r.shard
        assert shard is not None
        wrong = [rec for rec in r.records if shard_of(rec.test, rec.case_id, shard.count) != shard.index]
        if wrong:
            rec = wrong[0]
            problems.append(
                f"{r.label} holds {len(wrong)} case(s) of other shards (e.g. {rec.case_id} of {rec.test}, "
                f"which belongs to shard {shard_of(rec.test, rec.case_id, shard.count)}/{shard.count})"
            )
        for rec in r.records:
            key = (rec.test, rec.model, rec.case_id, int(getattr(rec, "sample", 0)))
            first = owner.setdefault(key, r)
            if first is not r:
                problems.append(
                    f"case {rec.case_id} of {rec.test} [{rec.model}] is in both {first.label} and {r.label}"
                )
                break
    return problems


def _stats(runs: Sequence[ShardRun]) -> GenerationStats | None:
    shard_stats = [r.run.get("stats") for r in runs if isinstance(r.run.get("stats"), dict)]
    if not shard_stats:
        return None
    names = ("submitted", "done", "cached", "failed", "retries", "spent")
    return GenerationStats(**{n: sum(s.get(n) or 0 for s in shard_stats) for n in names})


def new_run_id() -> str:
    """A run id like a pytest run's, marked as a merge."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6] + "-merged"


def merge(runs: Sequence[ShardRun], gate: GateOptions, *, run_id: str, run_dir: Path | None) -> RunOutcome:
    """The merged run's outcome, built by :func:`build_outcome` from every shard's records."""
    check_together(runs)
    runs = sorted(runs, key=lambda r: r.shard.index if r.shard else 0)
    first = runs[0].run
    records = [rec for r in runs for rec in r.records]
    judges = merged_judges(runs)
    notes = {r.summary.get("judge_agreement") for r in runs} - {None}
    return build_outcome(
        gate=gate,
        # What pytest would have said for these items unsharded: 1 when any failed or errored.
        status=int(any(rec.outcome in ("failed", "error") for rec in records)),
        stopped=False,
        run_id=run_id,
        # The merge's own start: the shards keep their times in their own rows, and `latest` is the merge.
        started=time.time(),
        models=list(first.get("models") or []),
        model_specs=dict(first.get("model_specs") or {}),
        datasets={t: h for r in runs for t, h in (r.run.get("datasets") or {}).items()},
        records=records,
        judge_note=lambda aggregates: next(iter(notes)) if len(notes) == 1 else None,
        stats=_stats(runs),
        report_path=None if run_dir is None else run_dir / "report.html",
        run_dir=run_dir,
        estimate_lines=[],
        judges=judges,
    )


# The figures of a judge's measurement: shards that measured one judge on one calibration file
# must agree on them (greedy judging through one cache gives the same verdicts everywhere).
_MEASURE_FIGURES = ("n", "kappa", "kappa_low", "kappa_high", "exact", "within_one", "all_agree", "error")


def merged_judges(runs: Sequence[ShardRun]) -> tuple[Any, ...]:
    """The shards' judge measurements as one run's: one per judge, with the union of the tests it graded.

    Each shard measures its judges on the whole calibration file, so a judge measured in two shards
    has one figure. Where the shards disagree (a sampled judge, a calibration file that changed
    between shards), no figure is chosen: the judge is merged as unmeasured, saying why, so that a
    ``judge_kappa`` floor cannot pass on one shard's number.
    """
    from dataclasses import replace

    from .judge_measure import JudgeMeasure

    seen_in: dict[tuple[Any, ...], list[tuple[str, JudgeMeasure]]] = {}  # judge -> (shard, its measure)
    for r in runs:
        for d in r.summary.get("judges") or []:
            m = JudgeMeasure.from_dict(d)
            seen_in.setdefault((m.model, m.rubric, m.calibration, m.samples), []).append(
                (str(r.shard or r.path), m)
            )
    out = []
    for seen in seen_in.values():
        m = replace(seen[0][1], tests=tuple(sorted({t for _, x in seen for t in x.tests})))
        if len({tuple(getattr(x, f) for f in _MEASURE_FIGURES) for _, x in seen}) > 1:
            each = "; ".join(f"shard {where}: kappa {x.kappa} (n={x.n})" for where, x in seen)
            m = replace(m, error=f"the shards measured it differently ({each})")
        out.append(m)
    return tuple(out)


def write_merged(
    outcome: RunOutcome,
    runs: Sequence[ShardRun],
    *,
    db_path: Path | None,
    command: str,
    rootdir: Path,
    warn: Callable[[str], None] | None = None,
) -> None:
    """Write the merged run: its folder (results.jsonl, summary.json, report.html) and its database run."""
    from . import __version__
    from .compare_page import write_page
    from .metrics_db import _dumps, iso
    from .report_page import render_page

    run_dir = outcome.run_dir
    row = {
        "id": outcome.run_id,
        "started": iso(outcome.started),
        "git_commit": runs[0].run.get("git_commit"),
        "command": command,
        "rootdir": str(rootdir),
        "models": _dumps(list(outcome.models)),
        "model_specs": _dumps(dict(outcome.model_specs)),
        "datasets": _dumps(dict(outcome.datasets)),
        "plugin_version": __version__,
        "complete": 0,
        "run_dir": None if run_dir is None else str(run_dir),
        "merged_from": _dumps([r.run.get("id") for r in runs]),
    }
    store = MetricsStore(outcome.run_id, db_path, run_dir, row, warn=warn)
    for rec in outcome.records:
        store.add_result(rec)
    if outcome.report_path is not None:
        about = [
            f"Merged from {len(runs)} shards: "
            + ", ".join(f"{r.run.get('id')} ({r.shard})" for r in runs)
            + f"; git commit {runs[0].run.get('git_commit') or 'unknown'}."
        ]
        write_page(outcome.report_path, render_page(outcome, f"LLM eval report {outcome.run_id}", about))
    store.finish(outcome)
