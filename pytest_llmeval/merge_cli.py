"""``llmeval merge RUN_DIR...``: the console command that joins a sharded run's folders into one gated run.

:func:`cmd_merge` loads and checks the shards' run folders, merges them with :mod:`pytest_llmeval.merge`,
writes the merged run and prints its summary; :func:`_merge_gate` takes the gate options from its
arguments, else from the project's ini keys (as a run does). Moved out of :mod:`pytest_llmeval.cli`,
which registers the command and re-exports these; like the other sub-command modules (``cache_cli``,
``results_table``, ``flaky``) this one imports the console's helpers from ``cli`` inside its functions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def cmd_merge(args: argparse.Namespace) -> int:
    import shlex

    from .cli import EXIT_FAILED, EXIT_OK, UsageError, _db_path, _paths
    from .merge import MergeError, check_together, load_shard, merge, new_run_id, write_merged
    from .redact import redact
    from .summary import write_summary

    paths = _paths()
    try:
        runs = [load_shard(p) for p in args.runs]
        check_together(runs)
    except MergeError as e:
        raise UsageError(str(e)) from None
    run_id = new_run_id()
    out = Path(args.output) if args.output else paths.runs_dir / run_id
    if (out / "summary.json").exists() or (out / "results.jsonl").exists():
        raise UsageError(f"{out} already holds a run; pass another --output or remove it")
    gate = _merge_gate(args, paths)
    outcome = merge(runs, gate, run_id=run_id, run_dir=out.resolve())
    write_merged(
        outcome,
        runs,
        db_path=_db_path(args),
        command=redact(shlex.join(["llmeval", *args.argv])),
        rootdir=paths.rootdir,
        warn=lambda msg: print(msg, file=sys.stderr),
    )
    write_summary(_Terminal(), outcome)
    from .ci_summary import write_ci_summary

    for problem in write_ci_summary(outcome, args.summary, title="LLM evals (merged shards)"):
        print(problem, file=sys.stderr)
    print(f"merged {len(runs)} shards into run {outcome.run_id}")
    return EXIT_OK if outcome.exit_status == 0 else EXIT_FAILED


def _merge_gate(args: argparse.Namespace, paths: Any) -> Any:
    """The gate options of ``llmeval merge``: its arguments, else the project's ini keys (as a run)."""
    from .cli import UsageError
    from .gate import parse_floor, parse_tolerance
    from .outcome import GateOptions

    baseline = args.baseline
    ini_baseline = paths.settings.get("llmeval_baseline")
    if baseline is None and ini_baseline:
        baseline = str(paths.rootdir / ini_baseline)
    try:
        tolerances = args.tolerance or [parse_tolerance(t) for t in paths.ini_lines("llmeval_tolerance")]
        floors = args.fail_under or [parse_floor(f) for f in paths.ini_lines("llmeval_fail_under")]
    except ValueError as e:
        raise UsageError(f"{paths.inifile}: {e}") from None
    save = args.save_baseline
    if save is not None:
        save = save or baseline or str(paths.rootdir / "evals" / "baseline.json")
    return GateOptions(
        baseline=baseline,
        baseline_explicit=args.baseline is not None,
        save=save,
        force_save=args.force_save_baseline,
        tolerances=tuple(tolerances),
        floors=tuple(floors),
        mode=args.gate_mode or "significant",
        require_baseline=args.require_baseline,
        root=paths.rootdir,
    )


class _Terminal:
    """What ``summary.write_summary`` writes to: lines and separators on stdout, no colours."""

    def write_line(self, line: str, **markup: bool) -> None:
        print(line)

    def write_sep(self, sep: str, title: str = "", **markup: bool) -> None:
        side = max(3, (100 - len(title) - 2) // 2)
        print(f"{sep * side} {title} {sep * side}" if title else sep * 100)
