"""The failure report of an eval item: a few lines a person reads, not a traceback.

An eval item fails because a scorer scored its output below a threshold (a
:class:`~pytest_llmeval.scorers._base.ScoreFailure`). pytest's default report of that
is the test source, the ``Case`` and ``Completion`` reprs and two ``contextlib``
frames before the message that matters. By default (``--tb=auto`` below ``-vv``)
such an item's report is replaced by at most five lines under pytest's header::

    case distractor [smollm2] · evals/starter/cases.jsonl:4 · 1 of 3 scores failed
      field_accuracy = 0.500 (needs >= 1): name: expected 'Leo', got 'Tom (age 58)'
      output: {"name": "Tom (age 58)", "age": 9}

``--tb=long`` (or any other explicit style), ``-vv`` and ``--showlocals`` keep pytest's
report; an item that fails for another reason (its test body's own ``assert``) keeps it too.
The report stays a ``ReprExceptionInfo``, so xdist ships it and the short summary quotes it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from _pytest._code.code import ReprExceptionInfo, ReprFileLocation, ReprTracebackNative

from .redact import redact, safe_terminal

MAX_SCORE_LINES = 3  # the third becomes "+N more" when more scores failed
DEFAULT_WIDTH = 120


def wants_compact(config: pytest.Config) -> bool:
    """Whether failed eval items get the short report: the default traceback style, below ``-vv``."""
    opt = config.option
    if getattr(opt, "tbstyle", "auto") != "auto" or getattr(opt, "showlocals", False):
        return False
    return config.get_verbosity() < 2


def compact_report(
    item: pytest.Item, report: pytest.TestReport, call: pytest.CallInfo[Any], completion: Any
) -> None:
    """Replace a failed eval item's traceback with its few lines, when a scorer failed it."""
    from .scorers._base import ScoreFailure

    excinfo = call.excinfo
    if report.when != "call" or not report.failed or excinfo is None:
        return
    if not wants_compact(item.config):
        return
    width = _width(item.config)
    if isinstance(excinfo.value, ScoreFailure):
        scores = list(item.stash.get(_scores_key(), []))
        failing = list(excinfo.value.scores)
        output = None if completion is None else completion.text
        lines = failure_lines(item, failing, len(scores), output, width)
        message = _crash_message(failing)
    else:
        from .repeats import SamplesFailed

        if not isinstance(excinfo.value, SamplesFailed):
            return
        failed = [r for r in excinfo.value.runs if r.outcome == "failed"]
        if not failed or not all(isinstance(r.exc, ScoreFailure) for r in failed):
            return  # a sample failed on the body's own assert: pytest's report shows it
        lines = sample_failure_lines(item, excinfo.value, failed, width)
        message = f"{excinfo.value.verdict}: sample {failed[0].index}: {_crash_message(failed[0].exc.scores)}"
    path, lineno = _location(item)
    crash = ReprFileLocation(path=path, lineno=lineno, message=message)
    report.longrepr = ReprExceptionInfo(
        reprtraceback=ReprTracebackNative([line + "\n" for line in lines]), reprcrash=crash
    )


def failure_lines(
    item: pytest.Item, failing: list[Any], n_scores: int, output: str | None, width: int
) -> list[str]:
    """The lines of one failed item: where its case is, each failing score, the head of the output."""
    n = max(n_scores, len(failing))
    lines = [_case_head(item) + f" · {len(failing)} of {n} score{'s' if n != 1 else ''} failed"]
    shown, rest = _capped(failing)
    for s in shown:
        lines.append("  " + score_line(s))
    if rest:
        lines.append(f"  +{len(rest)} more: " + ", ".join(_value_text(s) for s in rest))
    if output is not None:
        lines.append("  output: " + (output.strip() or "(empty)"))
    return [_fit(line, width) for line in lines]


def sample_failure_lines(item: pytest.Item, error: Any, failed: list[Any], width: int) -> list[str]:
    """The lines of a repeated item that its samples failed: the verdict and the policy, each failed
    sample's first failing score (at most three lines), and the output of the first failed sample."""
    lines = [_case_head(item) + f" · {error.verdict} ({error.policy})"]  # the rule: in --tb=long
    shown, rest = _capped(failed)
    for run in shown:
        scores = list(run.exc.scores)
        more = f" (+{len(scores) - 1} more)" if len(scores) > 1 else ""
        lines.append(f"  sample {run.index}: " + score_line(scores[0]) + more)
    if rest:
        lines.append(f"  +{len(rest)} more failed samples: " + ", ".join(str(r.index) for r in rest))
    first = failed[0].completion
    if first is not None:
        lines.append(f"  output (sample {failed[0].index}): " + (first.text.strip() or "(empty)"))
    return [_fit(line, width) for line in lines]


def _capped(rows: list[Any]) -> tuple[list[Any], list[Any]]:
    """The rows shown one per line and the rest, which share the last line: at most MAX_SCORE_LINES."""
    shown = rows if len(rows) <= MAX_SCORE_LINES else rows[: MAX_SCORE_LINES - 1]
    return shown, rows[len(shown) :]


def _case_head(item: pytest.Item) -> str:
    """``case ID [model] · cases.jsonl:LINE``."""
    params = item.callspec.params  # type: ignore[attr-defined]
    case, model = params["case"], params.get("model", "")
    where = _relative(str(getattr(case, "source", "") or ""), item.config.rootpath)
    return f"case {case.id} [{model}]" + (f" · {where}" if where else "")


def score_line(score: Any) -> str:
    """``name = value (needs >= threshold): first mismatches`` on one line."""
    expl = [x.strip() for x in (score.explanation or "").splitlines() if x.strip()]
    detail = "; ".join(expl[:3]) + (f"; +{len(expl) - 3} more" if len(expl) > 3 else "")
    return _value_text(score) + (f": {detail}" if detail else "")


def _value_text(score: Any) -> str:
    """The head of :meth:`Score.message`: ``name = 0.500 (needs >= 1)``."""
    bound = f" (needs >= {score.threshold:g})" if score.threshold is not None else ""
    return f"{score.name} = {score.value:.3f}{bound}"


def _crash_message(failing: list[Any]) -> str:
    """The short summary's text: the failing scores and their values."""
    return ", ".join(_value_text(s) for s in failing)


def _fit(line: str, width: int) -> str:
    """One terminal line: secrets redacted, control characters visible, cut to the width."""
    return safe_terminal(redact(line), max(40, width))


def _width(config: pytest.Config) -> int:
    tr = config.pluginmanager.get_plugin("terminalreporter")
    tw = getattr(tr, "_tw", None)
    width = getattr(tw, "fullwidth", None)
    if isinstance(width, int) and width > 0:
        return width
    try:
        return os.get_terminal_size().columns
    except OSError:
        return DEFAULT_WIDTH


def _location(item: pytest.Item) -> tuple[str, int]:
    path, lineno, _ = item.reportinfo()
    return str(path), (lineno or 0) + 1


def _relative(source: str, root: Path) -> str:
    """``/abs/evals/x/cases.jsonl:4`` -> ``evals/x/cases.jsonl:4`` under the rootdir."""
    if not source:
        return ""
    try:
        return str(Path(source).relative_to(root))
    except ValueError:
        return source


def _scores_key() -> Any:
    from .records import SCORES_KEY

    return SCORES_KEY
