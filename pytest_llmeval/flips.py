"""Cases whose outcome changed against the baseline: passed there and fails now, or the other way.

The gate tests whether the pass rate dropped; a reviewer also wants the cases behind the
change. They are found once, where the gate reads the baseline, and travel in the
:class:`~pytest_llmeval.outcome.RunOutcome` (the baseline file may be rewritten by
``--save-baseline`` before any output reads it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CaseFlip:
    """One case of a (test, model) that passed in the baseline and fails now, or failed and passes."""

    test: str
    model: str
    case_id: str
    was_passed: bool
    now_passed: bool
    score_before: float | None = None
    score_now: float | None = None

    @property
    def regression(self) -> bool:
        """Passed in the baseline, fails now."""
        return self.was_passed and not self.now_passed


def case_flips(entries: dict[str, Any] | None, aggregates: list[Any]) -> list[CaseFlip]:
    """The flips of every gated (test, model): regressions first, then fixes, each by test, model, case."""
    flips: list[CaseFlip] = []
    for a in aggregates:
        entry = ((entries or {}).get(a.test) or {}).get(a.model)
        if not isinstance(entry, dict):
            continue
        base = entry.get("cases") or {}
        for cid in sorted(set(base) & set(a.cases)):
            was, now = bool(base[cid].get("passed")), bool(a.cases[cid].get("passed"))
            if was != now:
                flips.append(CaseFlip(a.test, a.model, cid, was, now, _num(base[cid]), _num(a.cases[cid])))
    return sorted(flips, key=lambda f: (not f.regression, f.test, f.model, f.case_id))


def _num(case: dict[str, Any]) -> float | None:
    v = case.get("score")
    return float(v) if isinstance(v, (int, float)) else None
