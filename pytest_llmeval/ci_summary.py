"""The run as Markdown for a pull request: GitHub's job summary (``$GITHUB_STEP_SUMMARY``) or a file.

Written from the finished :class:`~pytest_llmeval.outcome.RunOutcome` (a run's, or
``llmeval merge``'s): the verdict, one row per (test, model), the gate table with each
row's minimum detectable effect, and the cases that flipped against the baseline (at most
:data:`MAX_FLIPS` rows, then a count of the rest). Everything that came from a model, a
dataset or a case is escaped: the summary renders as Markdown with HTML allowed.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .outcome import RunOutcome
from .redact import redact

MAX_FLIPS = 30
ENV = "GITHUB_STEP_SUMMARY"
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")  # what can start markup inside a table cell


def md(value: Any, limit: int = 200) -> str:
    """Text for a Markdown table cell: one line, secrets redacted, HTML and Markdown escaped."""
    text = redact("" if value is None else str(value))
    text = " ".join(text.split())  # no line breaks inside a cell
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def _num(v: float | None, fmt: str = "{:.3f}") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def render(outcome: RunOutcome, title: str = "LLM evals") -> str:
    """The summary's Markdown."""
    out = [f"## {md(title)}: {_verdict_word(outcome)}", ""]
    out += _about(outcome)
    out += _results_table(outcome)
    out += _gate_table(outcome)
    out += _flips(outcome)
    return "\n".join(out).rstrip() + "\n"


def _verdict_word(outcome: RunOutcome) -> str:
    v = outcome.verdict
    if v is not None:
        return "gate PASSED ✅" if v.passed else "gate FAILED ❌"
    return "not gated"


def _about(outcome: RunOutcome) -> list[str]:
    n = len(outcome.records)
    lines = [
        f"Run `{md(outcome.run_id)}`: {n} item{'s' if n != 1 else ''}, "
        f"model{'s' if len(outcome.models) != 1 else ''} {', '.join(md(m) for m in outcome.models) or '–'}, "
        f"{outcome.duration_s:.0f} s.",
        "",
    ]
    v = outcome.verdict
    if v is not None and not v.passed:
        lines += [f"- **{md(r, 400)}**" for r in v.reasons] + [""]
    notes = list(v.notes) if v is not None else []
    if v is None and outcome.baseline_note:
        notes.append(outcome.baseline_note)
    lines += [f"> {md(n_, 400)}" for n_ in notes]
    return lines + ([""] if notes else [])


def _main_scores(outcome: RunOutcome) -> dict[tuple[str, str], str]:
    names: dict[tuple[str, str], str] = {}
    for r in outcome.records:
        if r.main_score:
            names.setdefault((r.test, r.model), r.main_score)
    return names


def _timing(a: Any) -> str:
    """p95 under its honest name: a request's latency, or an in-process batch's time to last token."""
    if a.latency_p95 is not None:
        return f"latency p95 {a.latency_p95:.2f} s"
    ttlt = getattr(a, "time_to_last_token_p95", None)
    if ttlt is not None:
        return f"time to last token p95 {ttlt:.2f} s (batched)"
    return "–"


def _results_table(outcome: RunOutcome) -> list[str]:
    if not outcome.aggregates:
        return ["No eval items ran.", ""]
    mains = _main_scores(outcome)
    lines = [
        "### Results per test and model",
        "",
        "| test | model | n | pass rate | passed | failed | errors | main score | timing | cost |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    for a in outcome.aggregates:
        main = mains.get((a.test, a.model))
        score = f"{md(main)} {_num(a.scores.get(main))}" if main else "–"
        lines.append(
            f"| {md(a.test)} | {md(a.model)} | {a.n} | {a.pass_rate:.1%} | {a.passed} | {a.failed} | {a.errors} "
            f"| {score} | {_timing(a)} | ${a.cost:.4f} |"
        )
    return [*lines, ""]


def _gate_table(outcome: RunOutcome) -> list[str]:
    v = outcome.verdict
    if v is None or not v.rows:
        return []
    lines = [
        f"### Gate ({md(v.mode)})",
        "",
        "| test [model] | metric | baseline | current | delta [95% CI] | p | detectable change | verdict |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for r in v.rows:
        delta = "–" if r.delta is None else f"{r.delta:+.3f}"
        if r.ci is not None and not any(math.isnan(x) for x in r.ci):
            delta += f" [{r.ci[0]:+.3f}, {r.ci[1]:+.3f}]"
        mde = "never" if r.cannot_fail else _num(r.mde)
        status = f"**{md(r.status)}**" if r.status == "FAIL" else md(r.status)
        rule = f" ({md(r.rule)})" if r.rule else ""
        why = f"; cannot fail: {md(r.cannot_fail, 300)}" if r.cannot_fail else ""
        lines.append(
            f"| {md(r.test.split('::')[-1])} [{md(r.model)}] | {md(r.metric)} | {_num(r.baseline)} "
            f"| {_num(r.current)} | {delta} | {_num(r.p_value, '{:.3g}')} | {mde} | {status}{rule}{why} |"
        )
    lines += [
        "",
        "*detectable change*: the smallest worsening that could fail the row with this many shared cases.",
        "",
    ]
    return lines


def _flips(outcome: RunOutcome) -> list[str]:
    if outcome.verdict is None or not any(r.metric == "pass_rate" for r in outcome.verdict.rows):
        return []  # no baseline cases to flip against
    flips = list(outcome.flips)
    if not flips:
        return [
            "### Cases that flipped against the baseline",
            "",
            "None: every shared case kept its outcome.",
            "",
        ]
    worse = sum(f.regression for f in flips)
    lines = [
        f"### Cases that flipped against the baseline ({worse} now fail, {len(flips) - worse} now pass)",
        "",
        "| test [model] | case | baseline → now | main score | output (head) |",
        "| --- | --- | --- | --- | --- |",
    ]
    outputs = {(r.test, r.model, r.case_id): r.output for r in outcome.records}
    for f in flips[:MAX_FLIPS]:
        change = "pass → **fail**" if f.regression else "fail → pass"
        score = f"{_num(f.score_before)} → {_num(f.score_now)}"
        head = outputs.get((f.test, f.model, f.case_id))
        lines.append(
            f"| {md(f.test.split('::')[-1])} [{md(f.model)}] | {md(f.case_id)} | {change} | {score} "
            f"| {md(head, 80) if head is not None else '–'} |"
        )
    if len(flips) > MAX_FLIPS:
        lines += ["", f"…and {len(flips) - MAX_FLIPS} more (the run's HTML report lists every case)."]
    return [*lines, ""]


def targets(option: str | None, env: Mapping[str, str] | None = None) -> list[tuple[Path, str]]:
    """Where to write: ``(path, mode)``; GitHub's summary file is appended to (each step adds its part)."""
    env = os.environ if env is None else env
    out: list[tuple[Path, str]] = []
    if option:
        out.append((Path(option), "w"))
    if env.get(ENV):
        out.append((Path(env[ENV]), "a"))
    return out


def write_ci_summary(
    outcome: RunOutcome, option: str | None, env: Mapping[str, str] | None = None, title: str = "LLM evals"
) -> list[str]:
    """Write the summary where asked; returns warnings (a summary that cannot be written fails nothing)."""
    where = targets(option, env)
    if not where or not outcome.records:
        return []
    text = render(outcome, title)
    problems = []
    for path, mode in where:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open(mode, encoding="utf-8") as f:
                f.write(text if mode == "w" or path.stat().st_size == 0 else "\n" + text)
        except OSError as e:
            problems.append(f"llmeval: could not write the Markdown summary to {path}: {e}")
    return problems
