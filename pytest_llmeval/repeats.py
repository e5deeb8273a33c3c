"""Repeats: each (case, model) sampled N times, as one pytest item whose outcome follows a policy.

``--repeat N`` (ini ``llmeval_repeat``, or ``@dataset(..., repeat=N)``) gives every eval
item N samples. The item stays one pytest item with its usual id; its test body runs once
per sample, each time with that sample's completion and its own scores, and the item's
outcome follows from the samples' outcomes by ``--repeat-policy`` (all, majority, any;
:func:`results.outcome_from_samples`). Every sample becomes its own record
(``CaseResult.sample`` / ``samples``; samples after the first have the node id
``NODEID#sJ``), so aggregation, the gate's clustered test, the metrics database and the
report see each sample.

Sample 0 is the request of a run without repeats (same cache key); sample J > 0 adds J to
the request's seed (0 when it has none), which makes it another request with its own cache
entry. A model that decodes greedily (temperature 0) would give N identical samples: its
items keep one sample, and the run warns once per such model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest

from .backends.base import Completion, Request
from .collection import dataset_mark
from .redact import redact, safe_terminal
from .results import DEFAULT_SAMPLE_POLICY, SAMPLE_POLICIES, CaseResult, outcome_from_samples

HELP_REPEAT = (
    "sample each (case, model) N times (its own seed and cache entry per sample); one pytest item per case, "
    "whose outcome follows --repeat-policy (also @dataset(repeat=N); ini llmeval_repeat)"
)
HELP_REPEAT_POLICY = (
    "how a repeated item's outcome follows from its samples: all, majority (default: passes when more than "
    "half pass) or any; the gate uses the per-case pass fractions either way"
)
PLAN_KEY = pytest.StashKey["RepeatPlan"]()
RUNS_KEY = pytest.StashKey[list]()  # the item's SampleRun list, once its body ran per sample
SAMPLE_SEP = "#s"
FLAKY_SHOWN = 10  # flakiest cases listed per (test, model) in the terminal summary


@dataclass(frozen=True)
class RepeatPlan:
    """How many samples an item asked for, and how many it gets (1 for a greedy model)."""

    requested: int = 1
    samples: int = 1
    greedy: bool = False


@dataclass
class SampleRun:
    """What one run of the test body produced for one sample."""

    index: int
    outcome: str = "passed"
    scores: list[dict[str, Any]] = field(default_factory=list)
    completion: Completion | None = None
    error: str | None = None
    exc: BaseException | None = None


def sample_nodeid(nodeid: str, sample: int) -> str:
    """The record (and scheduler job) key of sample ``sample`` of item ``nodeid``."""
    return nodeid if sample == 0 else f"{nodeid}{SAMPLE_SEP}{sample}"


def item_nodeid(key: str) -> str:
    """The item node id a sample key belongs to."""
    head, sep, tail = key.rpartition(SAMPLE_SEP)
    return head if sep and tail.isdigit() else key


def is_sampling(params: dict[str, Any]) -> bool:
    """Whether a request samples (temperature above 0); at temperature 0 every backend decodes greedily."""
    try:
        return float(params.get("temperature") or 0.0) > 0.0
    except (TypeError, ValueError):
        return False


def sample_request(request: Request, sample: int) -> Request:
    """Sample ``sample``'s request: the request itself for sample 0, else its seed plus ``sample``."""
    if sample == 0:
        return request
    params = request.param_dict
    return Request.make(request.message_list, **{**params, "seed": int(params.get("seed") or 0) + sample})


def sample_params(params: dict[str, Any], sample: int) -> dict[str, Any]:
    """Parameters of a direct call made while sample ``sample`` runs (judges, multi-turn tests)."""
    if sample == 0 or not is_sampling(params):
        return params
    return {**params, "seed": int(params.get("seed") or 0) + sample}


def _positive_int(value: Any, where: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, bool) or n < 1 or str(n) != str(value).strip():
        raise pytest.UsageError(f"{where}: expected a whole number of samples >= 1, got {value!r}")
    return n


def parse_repeat(value: str) -> int:
    """``--repeat N``: a positive whole number (argparse turns the ValueError into a usage error)."""
    try:
        return _positive_int(value, "--repeat")
    except pytest.UsageError as e:
        raise ValueError(str(e)) from None


def requested_repeats(config: pytest.Config, item: pytest.Item) -> int:
    """Samples asked for: ``--repeat``, else ``@dataset(repeat=N)``, else ini ``llmeval_repeat``, else 1."""
    cli = config.getoption("llmeval_repeat", None)
    if cli:
        return int(cli)
    mark = dataset_mark(item)
    if mark is not None and mark.kwargs.get("repeat") is not None:
        return _positive_int(mark.kwargs["repeat"], f"{item.nodeid}: @dataset(repeat=...)")
    return _positive_int(config.getini("llmeval_repeat") or "1", "ini key llmeval_repeat")


def repeat_policy(config: pytest.Config) -> str:
    """``--repeat-policy``, else ini ``llmeval_repeat_policy``, else the default (majority)."""
    value = config.getoption("llmeval_repeat_policy", None) or config.getini("llmeval_repeat_policy")
    value = value or DEFAULT_SAMPLE_POLICY
    if value not in SAMPLE_POLICIES:
        raise pytest.UsageError(
            f"ini key llmeval_repeat_policy: expected one of {', '.join(SAMPLE_POLICIES)}, got {value!r}"
        )
    return str(value)


def plan_for(config: pytest.Config, item: pytest.Item, params: dict[str, Any]) -> RepeatPlan:
    """The item's plan from its request parameters; stashed on the item."""
    plan = item.stash.get(PLAN_KEY, None)
    if plan is None:
        requested = requested_repeats(config, item)
        greedy = requested > 1 and not is_sampling(params)
        plan = RepeatPlan(requested, 1 if greedy else requested, greedy)
        item.stash[PLAN_KEY] = plan
    return plan


# -- running the body once per sample ------------------------------------------------------------
def call_samples(item: pytest.Function, generation: Any, policy: str) -> bool | None:
    """``pytest_pyfunc_call`` for an item with several samples: the body once per sample.

    Returns None (pytest calls the body as usual) for an item with one sample. Otherwise
    each sample runs with its own completion and score list; an assertion makes the sample
    failed, a skip skipped, anything else an error. The item then passes, fails (with every
    failed sample's message), errors (re-raising the first error) or skips, by ``policy``.
    """
    __tracebackhide__ = True  # the failure shows each failed sample's message, not the plugin's frames
    plan = item.stash.get(PLAN_KEY, None)
    if plan is None:
        plan = plan_for(item.config, item, generation.params_for(item))
    if plan.samples <= 1:
        return None
    from .generation import CALL_ERROR_KEY, COMPLETION_KEY
    from .records import SCORES_KEY
    from .scorers import _base as scoring

    argnames = item._fixtureinfo.argnames  # the test function's own arguments
    runs: list[SampleRun] = []
    first_store = item.stash.get(SCORES_KEY, [])
    first_error = item.stash.get(CALL_ERROR_KEY, None)
    first_completion = item.stash.get(COMPLETION_KEY, None)
    try:
        for j in range(plan.samples):
            run = SampleRun(j, scores=first_store if j == 0 else [])
            scoring.begin_item(run.scores)
            generation.current_sample = j
            try:
                args = {name: item.funcargs[name] for name in argnames}
                if "completion" in args:
                    args["completion"] = first_completion if j == 0 else generation.completion_for(item, j)
                    run.completion = args["completion"]
                item.obj(**args)
            except (KeyboardInterrupt, pytest.exit.Exception):
                raise
            except AssertionError as e:
                run.outcome, run.exc, run.error = "failed", e, _message(e)
            except pytest.skip.Exception as e:
                run.outcome, run.exc, run.error = "skipped", e, _message(e)
            except BaseException as e:
                run.outcome, run.exc, run.error = "error", e, _message(e, with_type=True)
            finally:
                generation.current_sample = 0
                scoring.end_item()
            runs.append(run)
    finally:
        scoring.begin_item(first_store)  # records.scoring ends it as usual
        item.stash[RUNS_KEY] = runs
        if first_error is not None:
            item.stash[CALL_ERROR_KEY] = first_error
        elif CALL_ERROR_KEY in item.stash:
            del item.stash[CALL_ERROR_KEY]
    outcome = outcome_from_samples([r.outcome for r in runs], policy)
    if outcome == "passed":
        return True
    if outcome == "error":
        raise next(r.exc for r in runs if r.outcome == "error")  # type: ignore[misc]
    if outcome == "skipped":
        raise next(r.exc for r in runs if r.outcome == "skipped")  # type: ignore[misc]
    raise SamplesFailed(runs, policy)


class SamplesFailed(AssertionError):
    """An item whose samples fail its policy: a failed item, with each failed sample's message."""

    def __init__(self, runs: list[SampleRun], policy: str) -> None:
        ran = [r for r in runs if r.outcome != "skipped"]
        passed = sum(r.outcome == "passed" for r in ran)
        needs = {"all": "every sample", "majority": "more than half", "any": "one sample"}[policy]
        self.runs, self.verdict, self.policy = runs, f"{passed} of {len(ran)} samples passed", policy
        self.rule = f"--repeat-policy {policy} needs {needs} to pass"
        lines = [f"{self.verdict}; {self.rule}"]
        for r in runs:
            if r.outcome == "failed":
                text = (r.error or "").splitlines()
                lines.append(f"sample {r.index}: " + "\n    ".join(text[:12]))
        super().__init__("\n".join(lines))


def _message(e: BaseException, with_type: bool = False) -> str:
    text = redact(str(getattr(e, "msg", None) or e))
    return f"{type(e).__name__}: {text}" if with_type else text


# -- records ------------------------------------------------------------------------------------------
def sample_records(item: pytest.Item, base: CaseResult, policy: str) -> list[CaseResult]:
    """The records of an item: one per sample when it has several, else ``[base]``.

    ``base`` is the item's record from its report. A sample's record takes its own
    outcome, scores, error and completion; a setup that failed (no sample ran) gives
    every sample the item's outcome, so each case still has all its samples.
    """
    from .records import apply_completion

    plan = item.stash.get(PLAN_KEY, None)
    if plan is None or plan.requested <= 1:
        return [base]
    if plan.samples <= 1:  # greedy: one sample, and the run says why once (GreedyNote)
        base.extra = {**base.extra, "repeat_greedy": plan.requested}
        return [base]
    runs: list[SampleRun] | None = item.stash.get(RUNS_KEY, None)
    if not runs:
        extra = {**base.extra, "repeat_policy": policy}
        return [
            dataclasses.replace(
                base, nodeid=sample_nodeid(base.nodeid, j), sample=j, samples=plan.samples, extra=extra
            )
            for j in range(plan.samples)
        ]
    # A later sample's own completion replaces sample 0's; one whose call failed has none.
    blank = dataclasses.replace(
        base,
        output=None,
        latency_s=None,
        prompt_tokens=0,
        completion_tokens=0,
        cost=0.0,
        cached=False,
        retries=0,
        finish_reason=None,
        extra={},
    )
    out = []
    for r in runs:
        rec = dataclasses.replace(
            base if r.index == 0 else blank,
            nodeid=sample_nodeid(base.nodeid, r.index),
            sample=r.index,
            outcome=r.outcome,
            passed=r.outcome == "passed",
            scores=list(r.scores),
            error=r.error,
            samples=plan.samples,
        )
        rec.extra = dict(rec.extra)
        if r.index and r.completion is not None:
            apply_completion(rec, r.completion)
        rec.extra["repeat_policy"] = policy
        out.append(rec)
    return out


class GreedyNote:
    """Controller: one warning per model whose items asked for repeats but decode greedily."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.warned: set[str] = set()

    def __call__(self, rec: CaseResult) -> None:
        requested = (rec.extra or {}).get("repeat_greedy")
        if not requested or rec.model in self.warned:
            return
        self.warned.add(rec.model)
        from .console import write_line

        write_line(
            self.config,
            f"llmeval: warning: model {safe_terminal(rec.model, 80)} decodes greedily (temperature 0), so "
            f"its {requested} samples per case would be identical: one sample each (set a temperature "
            "above 0 in its params, or @dataset(temperature=...), to sample)",
            yellow=True,
        )


# -- the terminal summary -------------------------------------------------------------------------------
def summary_lines(a: Any) -> list[str]:
    """Lines under a (test, model) summary line: pass@k, pass^k, mean pass rate, the flakiest cases."""
    r = a.repeats
    if r is None:
        return []
    lines = [
        f"    repeats: {r.cases} cases x {r.k} samples | mean pass rate {r.mean_pass_rate:.1%} | "
        f"pass@{r.k} {r.pass_at_k:.1%} | pass^{r.k} {r.pass_all_k:.1%} | flaky {len(r.flaky)} of {r.cases}"
    ]
    for f in r.flaky[:FLAKY_SHOWN]:
        spread = (
            ""
            if f["spread"] is None
            else (f", main score {f['score_min']:.2f}..{f['score_max']:.2f} (spread {f['spread']:.2f})")
        )
        marks = "".join({"passed": "P", "failed": "F", "error": "E"}.get(o, "s") for o in f["outcomes"])
        lines.append(
            f"      flaky {safe_terminal(f['case_id'], 60)}: passed {f['outcomes'].count('passed')}/"
            f"{f['samples']} ({f['pass_fraction']:.2f}) [{marks}]{spread}"
        )
    if len(r.flaky) > FLAKY_SHOWN:
        lines.append(f"      ... and {len(r.flaky) - FLAKY_SHOWN} more flaky (the HTML report lists all)")
    return lines
