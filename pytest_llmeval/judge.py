"""LLM-as-judge: grade an answer against a rubric with a judge model, record a ``judge`` Score.

The prompt, the delimiters and the verdict parser live here as plain functions
(:func:`build_messages`, :func:`parse_verdict`, :func:`combine`; the prompt itself is in
:mod:`pytest_llmeval.judge_prompt`, re-exported here) so that the
``judge`` fixture and the calibration runner (:mod:`pytest_llmeval.calibration`)
grade in exactly the same way; the calibration figures describe the judge the
tests use.

Injection defence: the answer and the case fields go between tags that carry a
nonce derived from a hash of the whole material (an answer cannot contain the
hash of itself, so it cannot close its own tag), any tag-like text in the data
is neutralised as well, and the system instruction says that tagged material is
data, never instructions. The verdict format is strict; an unparseable verdict
is a :class:`JudgeError` (the item errors), never a silent score.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, LLMEvalError
from .judge_choice import (  # noqa: F401  (re-exported: choosing the judge, its rubric and its agreement note)
    API_JUDGE,
    DEFAULT_JUDGE,
    agreement_note,
    best_local_judge,
    calibration_path,
    check_judge_model,
    choose_judge,
    default_judge_model,
    load_rubric,
    resolve_judge_model,
    rubric_hash,
)
from .judge_prompt import (  # noqa: F401  (re-exported: the judge's prompt and request parameters)
    DEMOS,
    FIELD_ORDER,
    FINAL_INSTRUCTION,
    JUDGE_MAX_TOKENS,
    SAMPLE_TEMPERATURE,
    STOP,
    SYSTEM_PROMPT,
    build_messages,
    neutralise,
    prompt_nonce,
    request_params,
)
from .scorers import Score, make_score, record

SCORE_MIN, SCORE_MAX = 1, 5

# SCORE: 4 | Score: 4/5 | **SCORE:** 4 | score = 4 | Score is 4 out of 5
_VERDICT = re.compile(
    r"\bscore\b[\s*_]*(?:[:=]|\bis\b)[\s*_]*\(?([1-5])(?:\.0)?\)?"
    r"(?!\d|\.\d)(?!\s*(?:/|out\s+of)\s*(?!5\b)\d)",
    re.IGNORECASE,
)
_BARE = re.compile(r"^\s*\**\s*([1-5])(?:\s*/\s*5)?\s*\**\s*\.?\s*$")
_REASONING = re.compile(r"\breasoning\b[\s*_]*[:=][\s*_]*(.*)", re.IGNORECASE | re.DOTALL)
_JSON_OBJ = re.compile(r"\{.*?\}", re.DOTALL)
_AFTER_SCORE = re.compile(r"^\s*(?:(?:/|out\s+of)\s*5)?[\s*_).:,;-]*", re.IGNORECASE)
# The prompt's scaffolding echoed back by a weak judge: a delimiter tag (ours, or its neutralised form in
# the data) or a line of the instructions. A reply is cut at the first one (see clean_reply).
_ECHO = re.compile(
    r"[<\u2039]\s*/?\s*(?:answer|question|context|reference|rubric)-"
    r"|grade the answer\b|reply with score|reply in exactly this format|you are a strict grader"
    r"|everything between tags|\brubric\s*:",
    re.IGNORECASE,
)
# A second verdict (or a repeated label) ends the reasoning of the first: the first verdict wins.
_NEXT_LABEL = re.compile(r"\b(?:score|reasoning)\b[\s*_]*(?:[:=]|\bis\b)", re.IGNORECASE)


class JudgeError(LLMEvalError):
    """The judge's verdict could not be read (or no judge call succeeded).

    Deliberately not an AssertionError: a broken judge makes the item an
    *error*, with the raw verdict in the message, never a failed (or passed) item.
    """


@dataclass
class Verdict:
    """One parsed judge reply."""

    score: int
    reasoning: str
    raw: str


@dataclass
class Judgement:
    """The combined result of one or more verdicts on one answer."""

    value: float
    verdicts: list[Verdict]
    failures: list[str] = field(default_factory=list)  # raw replies that did not parse
    aggregate: str = "majority"

    @property
    def scores(self) -> list[int]:
        return [v.score for v in self.verdicts]

    def spread(self) -> str:
        """``samples [4, 3, 4]: min 3, max 4, stdev 0.47`` (population stdev)."""
        s = self.scores
        sd = statistics.pstdev(s) if len(s) > 1 else 0.0
        text = f"samples {s}: min {min(s)}, max {max(s)}, stdev {sd:.2f}"
        if self.failures:
            text += f"; {len(self.failures)} unparseable verdict(s) left out"
        return text


# -- verdicts -----------------------------------------------------------------------
def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clean_reply(raw: str) -> str:
    """The reply up to the first echo of the prompt's delimiters or instructions (nothing after it is
    the judge's own words)."""
    m = _ECHO.search(raw or "")
    return (raw or "") if m is None else raw[: m.start()]


def parse_verdict(raw: str) -> Verdict:
    """Read ``SCORE: n`` (a few harmless variants, or JSON ``{"score": n}``) from a judge reply.

    Accepted: ``SCORE: 4``, ``Score: 4/5``, ``**SCORE:** 4``, ``score = 4``,
    ``Score is 4 out of 5``, a reply that is just the digit, and a JSON object
    with an integer ``score`` from 1 to 5. The first ``SCORE`` line wins over JSON,
    JSON over a bare digit.
    The reply is read only up to an echoed delimiter or instruction (:func:`clean_reply`), and the
    reasoning ends at a second verdict, so it never holds the prompt's scaffolding.
    Anything else raises :class:`JudgeError` with the raw reply.
    """
    text = clean_reply(raw)
    m = _VERDICT.search(text)
    if m is not None:
        rest = text[m.end() :]
        r = _REASONING.search(rest) or _REASONING.search(text[: m.start()])
        reasoning = r.group(1) if r else _AFTER_SCORE.sub("", rest)
        cut_at = _NEXT_LABEL.search(reasoning)
        if cut_at is not None:
            reasoning = reasoning[: cut_at.start()]
        return Verdict(int(m.group(1)), _clip(reasoning), raw)
    for j in _JSON_OBJ.finditer(text):
        try:
            obj = json.loads(j.group(0))
        except ValueError:
            continue
        if isinstance(obj, dict):
            low = {str(k).lower(): v for k, v in obj.items()}
            s = low.get("score")
            if isinstance(s, (int, float)) and not isinstance(s, bool) and float(s).is_integer():
                if SCORE_MIN <= int(s) <= SCORE_MAX:
                    return Verdict(int(s), _clip(str(low.get("reasoning", ""))), raw)
    b = _BARE.match(text)
    if b is not None:
        return Verdict(int(b.group(1)), "", raw)
    raise JudgeError(
        f"judge error: no verdict in the reply (expected 'SCORE: <1-5>'); raw verdict: {_clip(raw or '', 500)!r}"
    )


def combine(scores: list[int], aggregate: str = "majority") -> float:
    """Majority vote (ties go to the lower score) or mean of several verdicts."""
    if not scores:
        raise ValueError("no scores to combine")
    if aggregate == "mean":
        return float(sum(scores)) / len(scores)
    if aggregate != "majority":
        raise ValueError(f"aggregate must be 'majority' or 'mean', got {aggregate!r}")
    counts = Counter(scores)
    top = max(counts.values())
    return float(min(s for s, c in counts.items() if c == top))


def judge_replies(replies: list[str], aggregate: str = "majority") -> Judgement:
    """Parse replies and combine them. With several, unparseable ones are left out as long as
    most of them parsed; otherwise (and always for a single reply) :class:`JudgeError`."""
    verdicts: list[Verdict] = []
    failures: list[str] = []
    errors: list[JudgeError] = []
    for raw in replies:
        try:
            verdicts.append(parse_verdict(raw))
        except JudgeError as e:
            failures.append(raw)
            errors.append(e)
    if not verdicts or len(failures) * 2 >= len(replies) > 1:
        if len(replies) == 1:
            raise errors[0]
        raise JudgeError(
            f"judge error: {len(failures)} of {len(replies)} verdicts could not be read; "
            f"raw verdict: {_clip(failures[0], 500)!r}"
        )
    return Judgement(combine([v.score for v in verdicts], aggregate), verdicts, failures, aggregate)


# -- the fixture's object ----------------------------------------------------------
class Judge:
    """What the ``judge`` fixture gives a test: ``judge.score(answer, rubric=..., **fields)``.

    ``selection`` gives the models (``specs()``, ``models_file()``); ``generation``
    generates (``generate_now``) and remembers which judge graded with which rubric
    (``note_judge``), for the agreement line of the run's outcome. When the run's
    generation has a judge stage (:mod:`.judge_stage`), a verdict it prepared for this
    item is used instead of a new call.
    """

    def __init__(self, config: Any, selection: Any, generation: Any, item: Any) -> None:
        self.generation = generation
        self.item = item
        self.stage = getattr(generation, "judge_stage", None)
        specs = selection.specs()
        if self.stage is not None:
            self.model = self.stage.choice()[0]
            self.stage.announce()
        else:
            self.model = resolve_judge_model(config, specs)
            check_judge_model(self.model, specs, str(selection.models_file()))
        opt = config.getoption("judge_samples", None)
        if opt is not None and opt < 1:
            raise ConfigError(f"--judge-samples must be at least 1, got {opt}")
        self.default_samples: int | None = opt

    def _path(self, rubric: str | Path) -> Path:
        p = Path(rubric)
        return p if p.is_absolute() else Path(self.item.path).parent / p

    def _rubric(self, rubric: str | Path) -> str:
        return load_rubric(self._path(rubric))

    def verdicts(
        self, answer: str, *, rubric: str | Path, samples: int | None = None, **fields: Any
    ) -> list[str]:
        """Raw judge replies (one at temperature 0, or ``samples`` sampled ones)."""
        return self._replies(self._rubric(rubric), answer, samples, fields)

    def _plan(self, samples: int | None) -> list[int | None]:
        n = samples if samples is not None else self.default_samples
        return [None] if not n or n == 1 else list(range(1, n + 1))

    def _replies(self, text: str, answer: str, samples: int | None, fields: dict[str, Any]) -> list[str]:
        __tracebackhide__ = True
        from .errors import BudgetExceeded

        messages = build_messages(text, str(answer), fields)
        plan = [request_params(sample) for sample in self._plan(samples)]
        futures = [
            self.stage.prepared(self.item, self.model, messages, p) if self.stage else None for p in plan
        ]
        if hasattr(self.generation, "submit_now"):  # the samples not prepared: submitted together
            submit = self.generation.submit_now
            futures = [f or submit(self.model, messages, **p) for f, p in zip(futures, plan, strict=True)]
        wait = getattr(self.generation, "wait_for", None)  # the plugin's: ticks the progress meanwhile
        out = []
        for fut, params in zip(futures, plan, strict=True):
            try:
                if fut is None:
                    comp = self.generation.generate_now(self.model, messages, **params)
                else:
                    comp = wait(fut) if wait is not None else fut.result()
            except BudgetExceeded as e:
                import pytest

                pytest.skip(str(e))
            except (JudgeError, ConfigError):
                raise
            except (
                Exception
            ) as e:  # the judge's call failed: an item error that names the judge and the cause
                raise JudgeError(f"judge {self.model} failed: {e}") from e
            out.append(comp.text)
        return out

    def score(
        self,
        answer: str,
        *,
        rubric: str | Path | None = None,
        at_least: float | None = None,
        samples: int | None = None,
        aggregate: str | None = None,
        **fields: Any,
    ) -> Score:
        """Grade ``answer`` 1-5 with ``rubric`` and record a ``judge`` Score (fails below ``at_least``).

        ``fields`` (question, context, reference, ...) are shown to the judge as
        tagged data. ``samples=n`` (or ``--judge-samples n``) draws n verdicts at
        temperature 0.7 and combines them by ``aggregate`` ("majority", ties to
        the lower score, or "mean"). An unreadable verdict raises JudgeError.
        Without ``rubric``, the judge declared with the test's dataset (``JudgeSpec``)
        gives the rubric, the case fields, the samples and the aggregate.
        """
        __tracebackhide__ = True
        if rubric is None:
            spec = self.stage.spec_of(self.item) if self.stage is not None else None
            if spec is None:
                raise ConfigError(
                    "judge.score() needs rubric=... unless the test declares its judge "
                    "(@dataset(..., judge=JudgeSpec('rubric.md', ...)))"
                )
            rubric = spec.rubric
            fields = fields or spec.case_fields(self.item.callspec.params["case"])
            samples = spec.samples if samples is None else samples
            aggregate = aggregate or spec.aggregate
        aggregate = aggregate or "majority"
        if aggregate not in ("majority", "mean"):
            raise ValueError(f"aggregate must be 'majority' or 'mean', got {aggregate!r}")
        if samples is not None and samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        text = self._rubric(rubric)
        self.generation.note_judge(self.model, text)
        if self.stage is not None:
            self.stage.note(
                self.item, self.model, self._path(rubric), text, len(self._plan(samples)), aggregate
            )
        replies = self._replies(text, answer, samples, fields)
        judgement = judge_replies(replies, aggregate)
        reasoning = next((v.reasoning for v in judgement.verdicts if v.score == round(judgement.value)), "")
        lines = [reasoning or "(no reasoning given)", f"judge: {self.model}"]
        if len(replies) > 1:
            lines.append(f"{aggregate} of {judgement.spread()}")
        return record(make_score("judge", judgement.value, at_least, "\n".join(lines), scale=(1.0, 5.0)))

    def __repr__(self) -> str:
        return f"<judge {self.model}>"
