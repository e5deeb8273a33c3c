"""Per-item result records and their aggregation per (test, model).

With repeats (several samples of one case) each sample is its own record, with
``sample`` (its index) and ``samples`` (how many the case has); aggregation then
groups a case's samples into a pass fraction, and the run gains pass@k, pass^k and
its flaky cases (:class:`SampleStats`).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .timing import batch_timing

USER_PROPERTY = "llmeval"
SAMPLE_POLICIES = ("all", "majority", "any")
# The item outcome that most often repeats on a rerun: it changes only when a case's pass
# probability crosses one half (docs/gate_statistics.md, "Repeats").
DEFAULT_SAMPLE_POLICY = "majority"


@dataclass
class CaseResult:
    """Everything recorded about one item: what was asked, answered, scored and what it cost."""

    nodeid: str
    test: str
    model: str
    case_id: str
    tags: list[str] = field(default_factory=list)
    outcome: str = "passed"  # passed | failed | error | skipped
    passed: bool = False
    scores: list[dict[str, Any]] = field(default_factory=list)
    main_score: str | None = None
    latency_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cached: bool = False
    retries: int = 0
    error: str | None = None
    output: str | None = None
    messages: list[dict[str, str]] | None = None
    expected: Any = None
    finish_reason: str | None = None
    dataset: str | None = None
    sample: int = 0  # this record's sample of the case (0-based); records before repeats lack both
    samples: int = 1  # how many samples the case has
    extra: dict[str, Any] = field(default_factory=dict)  # batch timing, output size, retry causes, cache key

    def to_json(self) -> str:
        # Fields hold only JSON values (scores are already dicts), so no deep copy is needed;
        # dataclasses.asdict was the largest plugin-side cost in the overhead profile.
        return json.dumps(
            {k: getattr(self, k) for k in self.__dataclass_fields__}, ensure_ascii=False, default=str
        )

    @classmethod
    def from_json(cls, s: str) -> CaseResult:
        data = json.loads(s)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def main_value(self) -> float | None:
        """The headline score's value (the named main score, else the last recorded)."""
        if not self.scores:
            return None
        if self.main_score:
            for s in self.scores:
                if s["name"] == self.main_score:
                    return s["value"]
        return self.scores[-1]["value"]


def outcome_from_samples(outcomes: Sequence[str], policy: str = DEFAULT_SAMPLE_POLICY) -> str:
    """An item's outcome from the outcomes of its samples.

    Skipped samples do not count; with none left the item is skipped. Any sample
    that errored makes the item an error whatever the policy: missing data cannot
    pass. Otherwise ``all`` passes when every sample passed (pass^k), ``majority``
    when more than half did (a tie fails), ``any`` when at least one did (pass@k).
    The default, ``majority``, is the outcome most likely to be the same on a rerun:
    it flips only when a case's pass probability crosses one half, where ``all`` flips
    for any case that fails now and then.
    """
    if policy not in SAMPLE_POLICIES:
        raise ValueError(f"sample policy must be one of {', '.join(SAMPLE_POLICIES)}, got {policy!r}")
    ran = [o for o in outcomes if o != "skipped"]
    if not ran:
        return "skipped"
    if "error" in ran:
        return "error"
    needed = {"all": len(ran), "majority": len(ran) // 2 + 1, "any": 1}[policy]
    return "passed" if sum(o == "passed" for o in ran) >= needed else "failed"


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class SampleStats:
    """What repeats add to an aggregate: per-case pass fractions summarised, and the flaky cases."""

    k: int  # samples per case (the fewest any case has, when they differ)
    cases: int
    mean_pass_rate: float  # mean over cases of their pass fractions
    pass_at_k: float  # share of cases where at least one of k samples passes
    pass_all_k: float  # pass^k: share of cases where all k samples pass
    # Cases whose samples disagree, flakiest (pass fraction nearest one half) first: case_id,
    # pass_fraction, samples, outcomes (in sample order), score_min, score_max, spread.
    flaky: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Aggregate:
    """Summary of one (test, model) group."""

    test: str
    model: str
    n: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    pass_rate: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    latency_p50: float | None = None  # per-request latency: servers only (see timing.py)
    latency_p95: float | None = None
    time_to_last_token_p50: float | None = None  # in-process batches (timing.BATCH_METRICS)
    time_to_last_token_p95: float | None = None
    s_per_token_p50: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0  # as if every call were made: the figure the cost gate compares
    cost_spent: float = 0.0  # paid in this run
    cost_replayed: float = 0.0  # recorded cost of cached completions
    cached: int = 0
    retries: int = 0
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    repeats: SampleStats | None = None  # only when some case has more than one sample

    def metric(self, name: str) -> float | None:
        """Look a metric up by the names the gate uses (pass_rate, latency_p95, cost, score:NAME)."""
        if name.startswith("score:"):
            return self.scores.get(name[6:])
        if name in self.scores and not hasattr(self, name):
            return self.scores[name]
        v = getattr(self, name, None)
        return float(v) if isinstance(v, (int, float)) else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.repeats is None:
            del d["repeats"]  # a run without repeats keeps today's shape
        return d


def aggregate(results: list[CaseResult]) -> list[Aggregate]:
    """Group results by (test, model) in first-seen order and summarise each group.

    Skipped items (e.g. after a budget stop) are counted but excluded from the
    pass rate; errors count as not passed, so missing data cannot look good.
    """
    groups: dict[tuple[str, str], list[CaseResult]] = defaultdict(list)
    for r in results:
        groups[(r.test, r.model)].append(r)
    out = []
    for (test, model), rs in groups.items():
        a = Aggregate(test=test, model=model)
        ran = [r for r in rs if r.outcome != "skipped"]
        a.n = len(ran)
        a.skipped = len(rs) - len(ran)
        a.passed = sum(r.outcome == "passed" for r in ran)
        a.failed = sum(r.outcome == "failed" for r in ran)
        a.errors = sum(r.outcome == "error" for r in ran)
        a.pass_rate = a.passed / a.n if a.n else 0.0
        by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in ran:
            for s in r.scores:
                by_name[s["name"]].append(s)
        for name, ss in by_name.items():
            vals = [s["value"] for s in ss if s["value"] is not None]
            a.scores[name] = sum(vals) / len(vals) if vals else 0.0
            if any(s.get("aggregate") == "rate" for s in ss):
                a.rates[name] = sum(bool(s["passed"]) for s in ss) / len(ss)
        lats = [r.latency_s for r in ran if r.latency_s is not None and r.outcome != "error"]
        a.latency_p50 = percentile(lats, 50)
        a.latency_p95 = percentile(lats, 95)
        for k, v in batch_timing(ran).items():
            setattr(a, k, v)
        a.prompt_tokens = sum(r.prompt_tokens for r in ran)
        a.completion_tokens = sum(r.completion_tokens for r in ran)
        a.cost = sum(r.cost for r in ran)
        a.cost_spent = sum(r.cost for r in ran if not r.cached)
        a.cost_replayed = sum(r.cost for r in ran if r.cached)
        a.cached = sum(r.cached for r in ran)
        a.retries = sum(r.retries for r in ran)
        if any(r.samples > 1 for r in ran):
            a.cases, a.repeats = _sampled_cases(ran)
        else:
            a.cases = {
                r.case_id: {
                    "passed": r.outcome == "passed",
                    "outcome": r.outcome,
                    "score": r.main_value(),
                    "latency": r.latency_s,
                }
                for r in ran
            }
        out.append(a)
    return out


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _sampled_cases(ran: list[CaseResult]) -> tuple[dict[str, dict[str, Any]], SampleStats]:
    """Per-case entries from the samples of each case, and the run's pass@k, pass^k and flaky cases.

    A case's score and latency are the means over its samples; its ``passed`` and
    ``outcome`` follow the policy its records were run with (``extra["repeat_policy"]``,
    else :data:`DEFAULT_SAMPLE_POLICY`); ``pass_fraction`` and ``samples`` are what the
    gate's clustered test reads.
    """
    from .stats import pass_all_k, pass_at_k

    by_case: dict[str, list[CaseResult]] = defaultdict(list)
    for r in ran:
        by_case[r.case_id].append(r)
    cases: dict[str, dict[str, Any]] = {}
    counts: list[tuple[int, int]] = []
    flaky: list[dict[str, Any]] = []
    for cid, rs in by_case.items():
        rs.sort(key=lambda r: r.sample)
        outcomes = [r.outcome for r in rs]
        passes, n = outcomes.count("passed"), len(rs)
        policy = next((p for r in rs if (p := (r.extra or {}).get("repeat_policy"))), DEFAULT_SAMPLE_POLICY)
        outcome = outcome_from_samples(outcomes, policy)
        mains = [v for v in (r.main_value() for r in rs) if v is not None]
        lats = [r.latency_s for r in rs if r.latency_s is not None and r.outcome != "error"]
        cases[cid] = {
            "passed": outcome == "passed",
            "outcome": outcome,
            "score": _mean(mains),
            "latency": _mean(lats),
            "pass_fraction": passes / n,
            "samples": n,
        }
        counts.append((passes, n))
        if 0 < passes < n:
            lo, hi = (min(mains), max(mains)) if mains else (None, None)
            flaky.append(
                {
                    "case_id": cid,
                    "pass_fraction": passes / n,
                    "samples": n,
                    "outcomes": outcomes,
                    "score_min": lo,
                    "score_max": hi,
                    "spread": None if lo is None or hi is None else hi - lo,
                }
            )
    flaky.sort(
        key=lambda f: (-f["pass_fraction"] * (1 - f["pass_fraction"]), -(f["spread"] or 0.0), f["case_id"])
    )
    k = min(n for _, n in counts)
    stats = SampleStats(
        k=k,
        cases=len(counts),
        mean_pass_rate=sum(c / n for c, n in counts) / len(counts),
        pass_at_k=sum(pass_at_k(n, c, k) for c, n in counts) / len(counts),
        pass_all_k=sum(pass_all_k(n, c, k) for c, n in counts) / len(counts),
        flaky=flaky,
    )
    return cases, stats
