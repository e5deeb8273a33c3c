"""``llmeval flaky``: the cases whose results disagree, across the last runs of the metrics database.

A case (test, model, case id) is flaky when some of its samples passed and some did not:
the samples of one run (``--repeat N``) and the runs themselves both count, so cases that
flip between runs without repeats show up too. Errors and skips are left out: they say
nothing about the model's answers.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from collections import defaultdict
from typing import Any

from .redact import safe_terminal


def flaky_cases(conn: sqlite3.Connection, last: int = 10, model: str | None = None) -> list[dict[str, Any]]:
    """The flaky cases of the ``last`` runs, flakiest first (pass fraction nearest one half, then most samples).

    Each: test, model, case_id, passed, samples, pass_fraction, runs (runs that ran it),
    flaky_runs (runs whose own samples disagreed), last_outcomes (its outcomes in the latest run).
    """
    runs = [
        r["id"]
        for r in conn.execute("SELECT id FROM runs ORDER BY started DESC, rowid DESC LIMIT ?", (last,))
    ]
    if not runs:
        return []
    order = {rid: i for i, rid in enumerate(runs)}  # 0: the latest
    marks = ",".join("?" * len(runs))
    query = (
        f"SELECT run_id, test, model, case_id, outcome, sample FROM results WHERE run_id IN ({marks}) "
        "AND outcome IN ('passed', 'failed')"
    )
    params: list[Any] = list(runs)
    if model:
        query += " AND model = ?"
        params.append(model)
    per_case: dict[tuple[str, str, str], dict[str, list[tuple[int, str]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for row in conn.execute(query, params):
        per_case[(row["test"], row["model"], row["case_id"])][row["run_id"]].append(
            (row["sample"], row["outcome"])
        )
    out = []
    for (test, mdl, cid), by_run in per_case.items():
        outcomes = [o for samples in by_run.values() for _, o in samples]
        passed = outcomes.count("passed")
        if not 0 < passed < len(outcomes):
            continue
        latest = by_run[min(by_run, key=order.__getitem__)]
        out.append(
            {
                "test": test,
                "model": mdl,
                "case_id": cid,
                "passed": passed,
                "samples": len(outcomes),
                "pass_fraction": passed / len(outcomes),
                "runs": len(by_run),
                "flaky_runs": sum(len({o for _, o in s}) > 1 for s in by_run.values()),
                "last_outcomes": [o for _, o in sorted(latest)],
            }
        )
    out.sort(
        key=lambda f: (-f["pass_fraction"] * (1 - f["pass_fraction"]), -f["samples"], f["test"], f["case_id"])
    )
    return out


def cmd_flaky(args: argparse.Namespace) -> int:
    """Print the flaky cases of the last runs (``--json`` for all of them as JSON)."""
    from .cli import EXIT_OK, _db_path, _open

    if args.last < 1:
        from .cli import UsageError

        raise UsageError("--last takes a number of runs >= 1")
    conn = _open(args)
    cases = flaky_cases(conn, args.last, args.model)
    conn.close()
    if args.json:
        print(json.dumps(cases, indent=2))
        return EXIT_OK
    if not cases:
        print(f"no flaky cases in the last {args.last} run(s) of {_db_path(args)}")
        return EXIT_OK
    print(f"{len(cases)} flaky case(s) in the last {args.last} run(s), flakiest first:")
    print(f"{'passed':>9} {'fraction':>8} {'runs':>4} {'flaky in':>8}  case  [model]  test  (latest samples)")
    for f in cases[: args.limit]:
        latest = "".join({"passed": "P", "failed": "F"}[o] for o in f["last_outcomes"])
        print(
            f"{f['passed']:>4}/{f['samples']:<4} {f['pass_fraction']:>8.2f} {f['runs']:>4} {f['flaky_runs']:>8}  "
            f"{safe_terminal(f['case_id'], 60)}  [{safe_terminal(f['model'], 40)}]  "
            f"{safe_terminal(f['test'], 80)}  ({latest})"
        )
    if len(cases) > args.limit:
        print(f"... and {len(cases) - args.limit} more (--limit N, or --json for all)")
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``llmeval flaky`` to the console's subcommands."""
    sp = sub.add_parser(
        "flaky",
        parents=[common],
        help="cases whose samples or runs disagree, across the last runs (with --repeat N, within a run too)",
    )
    sp.add_argument(
        "--last", type=int, default=10, metavar="K", help="how many of the latest runs (default 10)"
    )
    sp.add_argument("--model", default=None, metavar="NAME", help="only this model's cases")
    sp.add_argument("--limit", type=int, default=30, metavar="N", help="rows printed (default 30)")
    sp.add_argument("--json", action="store_true", help="print every flaky case as JSON")
    sp.set_defaults(func=cmd_flaky)
