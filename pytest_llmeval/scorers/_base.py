"""Score records, the current item they attach to, soft assertions, and the ``@scorer`` decorator."""

from __future__ import annotations

import functools
import math
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# The item whose test body is running (set by the plugin around each call).
# Scorers run in the test's own thread, so a module global is enough.
_current: dict[str, Any] = {"scores": None, "soft": None}


@dataclass
class Score:
    """One named, numeric judgement of an item's output."""

    name: str
    value: float
    threshold: float | None = None
    passed: bool = True
    explanation: str = ""
    aggregate: str = "mean"  # how the run summarises it: "mean" of values or "rate" of passes
    scale: tuple[float, float] | None = None  # (worst, best) when not 0..1, e.g. (1, 5) for the judge

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}  # flat fields: no deep copy
        if isinstance(d["value"], float) and not math.isfinite(d["value"]):
            d["value"] = None
        if d["scale"] is None:
            del d["scale"]  # the common case: records stay as they were
        else:
            d["scale"] = [float(x) for x in d["scale"]]
        return d

    def message(self) -> str:
        """A failure message that shows what was expected and what was got."""
        from ..redact import safe_terminal

        bound = f" (needs >= {self.threshold:g})" if self.threshold is not None else ""
        head = f"{self.name} = {self.value:.3f}{bound}"
        if not self.explanation:
            return head
        # Explanations quote model output: no escape sequence may reach the terminal.
        lines = [safe_terminal(line, 400) for line in self.explanation.splitlines()[:40]]
        return f"{head}\n{_indent(chr(10).join(lines))}"


class ScoreFailure(AssertionError):
    """An item scored below a threshold: a failed item, never an error."""

    def __init__(self, scores: list[Score]) -> None:
        self.scores = scores
        super().__init__("\n".join(s.message() for s in scores))


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def begin_item(store: list[dict[str, Any]]) -> None:
    """Start collecting scores for an item into ``store`` (called by the plugin)."""
    _current["scores"] = store
    _current["soft"] = None


def end_item() -> None:
    """Stop collecting scores (called by the plugin)."""
    _current["scores"] = None
    _current["soft"] = None


def record(score: Score) -> Score:
    """Attach ``score`` to the running item and fail it if below threshold.

    Inside :func:`soft` the failure is deferred until the block ends.
    """
    __tracebackhide__ = True
    store = _current["scores"]
    if store is not None:
        store.append(score.to_dict())
    if not score.passed:
        pending = _current["soft"]
        if pending is not None:
            pending.append(score)
        else:
            raise ScoreFailure([score])
    return score


@contextmanager
def soft() -> Iterator[None]:
    """Record every score in the block; fail once at the end with all the misses.

    Use it so that an invalid JSON answer still records 0 for the scores after
    ``json_valid`` instead of leaving them out of the aggregates.
    """
    __tracebackhide__ = True
    outer = _current["soft"]
    pending: list[Score] = []
    _current["soft"] = pending
    try:
        yield
    finally:
        _current["soft"] = outer
    if pending:
        if outer is not None:
            outer.extend(pending)
        else:
            raise ScoreFailure(pending)


def make_score(
    name: str,
    value: float,
    threshold: float | None,
    explanation: str = "",
    aggregate: str = "mean",
    scale: tuple[float, float] | None = None,
) -> Score:
    """Build a Score; passed means value >= threshold (no threshold: always passed).

    ``scale`` is the score's range when it is not 0..1 (the judge's 1-5), so charts draw it on its own scale.
    """
    value = float(value)
    passed = threshold is None or (math.isfinite(value) and value >= threshold - 1e-12)
    return Score(name, value, threshold, passed, explanation, aggregate, scale)


def scorer(
    name: str | None = None,
    *,
    threshold: float | None = 1.0,
    aggregate: str = "mean",
) -> Callable[[Callable[..., Any]], Callable[..., Score]]:
    """Turn a function into a scorer that records a Score and asserts.

    The function returns a number, a bool, a ``(value, explanation)`` pair or a
    :class:`Score`. Callers can override the threshold with ``at_least=``.
    ``aggregate`` is ``"mean"`` (average value) or ``"rate"`` (share passed)::

        @scorer(threshold=1.0, aggregate="rate")
        def short_enough(text, limit=200):
            return len(text) <= limit, f"{len(text)} characters, limit {limit}"
    """
    if aggregate not in ("mean", "rate"):
        raise ValueError("aggregate must be 'mean' or 'rate'")

    def deco(fn: Callable[..., Any]) -> Callable[..., Score]:
        score_name = name or fn.__name__

        @functools.wraps(fn)
        def wrapper(*args: Any, at_least: float | None = threshold, **kwargs: Any) -> Score:
            __tracebackhide__ = True
            out = fn(*args, **kwargs)
            if isinstance(out, Score):
                return record(out)
            explanation = ""
            if isinstance(out, tuple):
                out, explanation = out
            return record(make_score(score_name, float(out), at_least, str(explanation), aggregate))

        wrapper.score_name = score_name  # type: ignore[attr-defined]
        wrapper.aggregate = aggregate  # type: ignore[attr-defined]
        return wrapper

    return deco


def normalize_text(value: Any) -> str:
    """NFC, casefold, collapse whitespace, strip."""
    s = unicodedata.normalize("NFC", str(value)).casefold()
    return " ".join(s.split())
