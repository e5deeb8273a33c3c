"""``llmeval table``: a stored run as the README's results table, in Markdown, and its judges.

One row per (suite, model): the pass rate with its 95% interval (Wilson), the suite's main
score (field accuracy for JSON extraction), the p95 timing under its honest name (a
server's request latency, or an in-process batch's time to last token: ``timing.py``), and
the cost of 1,000 requests at the model's prices from the models file ("$0" for a local
model). ``--unmeasured MODEL`` appends a row for a model that did not run, saying what it
needs (``OPENAI_API_KEY``, a GPU) and how to run it. A second table names each judge the run
used and its measured agreement with people (quadratic kappa with its CI), or "unmeasured" and why.
"""

from __future__ import annotations

import argparse
import math
import sqlite3
from pathlib import Path
from typing import Any

Z95 = 1.959964


def wilson(passed: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a pass rate (None for no items)."""
    if n <= 0:
        return None
    p = passed / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def suite_name(test: str, tests: list[str]) -> str:
    """``evals/json_extraction/test_x.py::test_y`` -> ``json_extraction`` (with the test when the
    folder holds several)."""
    file, _, func = test.partition("::")
    folder = Path(file).parent.name or Path(file).stem
    siblings = {t for t in tests if (Path(t.partition("::")[0]).parent.name or Path(t).stem) == folder}
    return f"{folder} ({func})" if len(siblings) > 1 and func else folder


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def timing_cell(metrics: dict[str, Any]) -> str:
    """The p95 timing under the name of what was measured."""
    if metrics.get("latency_p95") is not None:
        return f"latency p95 {metrics['latency_p95']:.2f} s"
    if metrics.get("time_to_last_token_p95") is not None:
        return f"time to last token p95 {metrics['time_to_last_token_p95']:.1f} s (in-process batch)"
    return "–"


def cost_per_1k(results: list[dict[str, Any]], spec: Any) -> str:
    """USD for 1,000 requests like this run's: its mean tokens at the model's prices."""
    rows = [r for r in results if r["outcome"] != "skipped"]
    if not rows:
        return "–"
    if spec is not None:
        if not spec.cost_per_1k_prompt and not spec.cost_per_1k_completion:
            return "$0"
        per = sum(spec.cost(r["prompt_tokens"], r["completion_tokens"]) for r in rows) / len(rows)
    else:  # a model the models file no longer knows: the costs the run recorded
        per = sum(float(r["cost"] or 0) for r in rows) / len(rows)
    return "$0" if per == 0 else f"${per * 1000:.2f}"


def render_table(run: dict[str, Any], specs: dict[str, Any], unmeasured: list[str] | None = None) -> str:
    """The Markdown table of a loaded run (``runs.load_run``), plus rows for ``unmeasured`` models."""
    results = run["results"]
    tests = sorted({a["test"] for a in run["aggregates"]})
    mains: dict[tuple[str, str], str] = {}
    for r in results:  # the named main score, else the last one recorded (as CaseResult.main_value)
        name = r.get("main_score") or (r["scores"][-1].get("name") if r.get("scores") else None)
        if name:
            mains.setdefault((r["test"], r["model"]), name)
    lines = [
        "| Suite | Model | Pass rate [95% CI] | Main score | Timing (p95) | Cost / 1k requests | How |",
        "|-------|-------|--------------------|------------|--------------|--------------------|-----|",
    ]
    for agg in sorted(run["aggregates"], key=lambda a: (a["test"], a["model"])):
        test, model, m = agg["test"], agg["model"], agg["metrics"]
        n, passed = int(m.get("n") or 0), int(m.get("passed") or 0)
        scored = n - int(m.get("skipped") or 0)
        ci = wilson(passed, scored)
        rate = f"{passed / scored:.1%} ({passed}/{scored})" if scored else "–"
        if ci is not None:
            rate += f" [{ci[0]:.1%}, {ci[1]:.1%}]"
        main = mains.get((test, model))
        value = m.get(f"score:{main}") if main else None
        score = f"{main.replace('_', ' ')} {value:.3f}" if main and value is not None else "–"
        mine = [r for r in results if r["test"] == test and r["model"] == model]
        cost = cost_per_1k(mine, specs.get(model))
        row = (suite_name(test, tests), model, rate, score, timing_cell(m), cost, f"`--model {model}`")
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    for name in unmeasured or []:
        lines.append("| " + " | ".join(_cell(c) for c in unmeasured_row(name, specs)) + " |")
    return "\n".join(lines) + "\n" + judge_table(run["run"].get("judges"))


def judge_table(judges: list[dict[str, Any]] | None) -> str:
    """The run's judges and their measured agreement with people, as a second table ("" when no
    judge graded): a judge's scores mean nothing without it, so the table that shows them says it."""
    if not judges:
        return ""
    lines = [
        "",
        "| Judge | Graded | Quadratic kappa with people [95% CI] | Exact / within-1 | Calibration |",
        "|-------|--------|--------------------------------------|------------------|-------------|",
    ]
    from .judge_measure import JudgeMeasure

    for j in judges:
        m = JudgeMeasure.from_dict(j)
        graded = ", ".join(suite_name(t, list(m.tests)) for t in m.tests) or "–"
        if m.measured and m.kappa is not None:
            kappa = f"{m.kappa:.2f}"
            if m.kappa_low is not None:
                kappa += f" [{m.kappa_low:.2f}, {m.kappa_high:.2f}]"
            agree = f"{m.exact:.2f} / {m.within_one:.2f}"
            where = f"{m.calibration} (n={m.n})"
        else:  # its label says why: no calibration file, or the measurement failed
            kappa, agree, where = "unmeasured", "–", m.label()
        lines.append("| " + " | ".join(_cell(c) for c in (m.model, graded, kappa, agree, where)) + " |")
    return "\n".join(lines) + "\n"


def unmeasured_row(name: str, specs: dict[str, Any]) -> tuple[str, ...]:
    """A row for a model that did not run: its prices, what it needs, and the command that runs it."""
    spec = specs.get(name)
    need, prices = "not in the models file", "–"
    if spec is not None:
        ok, why = spec.availability()
        need = "runs here, not in this run" if ok else why
        if spec.cost_per_1k_prompt or spec.cost_per_1k_completion:
            prices = (
                f"at ${spec.cost_per_1k_prompt * 1000:.2f} / ${spec.cost_per_1k_completion * 1000:.2f} "
                "per 1M tokens in / out"
            )
        else:
            prices = "$0"
    return ("–", name, "not measured", "–", "–", prices, f"{need}: `--model {name}`")


def header(run: dict[str, Any], ref: str) -> str:
    """Where the table comes from: the command, the run, its commit."""
    r = run["run"]
    commit = (r.get("git_commit") or "unknown")[:12]
    return (
        f"Generated by `llmeval table --run {ref}` from run `{r['id']}` "
        f"(started {r.get('started', '?')}, git commit {commit}).\n"
    )


def cmd_table(args: argparse.Namespace) -> int:
    """Print the run's results table as Markdown."""
    from .cli import UsageError, _load, _open, _paths
    from .console import split_models
    from .errors import ConfigError
    from .models import known_models

    conn: sqlite3.Connection = _open(args)
    try:
        run = _load(conn, args.run)
    finally:
        conn.close()
    path = Path(args.models_file) if args.models_file else _paths().models_file
    try:
        specs = known_models(path, required=bool(args.models_file))
    except ConfigError as e:
        raise UsageError(str(e)) from None
    text = render_table(run, specs, split_models(args.unmeasured or []))
    print(text if args.no_header else header(run, args.run) + "\n" + text, end="")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``llmeval table`` to the console's sub-commands."""
    sp = sub.add_parser(
        "table",
        parents=[common],
        help="a stored run as a Markdown results table (pass rate, main score, p95 timing, cost per 1k)",
    )
    sp.add_argument("--run", default="latest", metavar="ID", help="run id, unique prefix, latest or latest~N")
    sp.add_argument(
        "--unmeasured",
        action="append",
        default=[],
        metavar="MODEL",
        help="append a row for a model that did not run, with what it needs (repeatable, comma-separated)",
    )
    sp.add_argument("--models-file", default=None, metavar="PATH", help="models file with the prices")
    sp.add_argument("--no-header", action="store_true", help="print the table alone")
    sp.set_defaults(func=cmd_table)
