"""How far to trust the judge: agreement with human scores on a calibration set.

    python -m pytest_llmeval.calibration --judge smollm2 \\
        --calibration evals/qa/judge_calibration.jsonl --rubric evals/qa/rubric.md

Each calibration line holds ``answer`` and ``human_score`` (1-5) plus the
fields the judge sees (``question``, ``context``, ``reference``). The judge
grades every line once at temperature 0 (the verdict the ``judge`` fixture
uses by default) and ``repeats`` more times at temperature 0.7 with seeds
1..repeats (what ``--judge-samples`` draws). The report gives, for the
temperature-0 verdicts: exact and within-one agreement, quadratic-weighted
Cohen's kappa and Spearman's rho; for the samples: self-consistency; and the
share of replies that could not be parsed. The same prompt-building and
parsing code as the fixture is used (:mod:`pytest_llmeval.judge`), through the
same scheduler and response cache.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .agreement import (  # noqa: F401  (re-exported: the calibration API)
    agreement,
    exact_agreement,
    quadratic_weighted_kappa,
    self_consistency,
    spearman,
    within_one_agreement,
)
from .backends.base import Request
from .cache import DEFAULT_CACHE
from .dataset import load_cases
from .errors import ConfigError, DatasetError, LLMEvalError
from .judge import (
    FIELD_ORDER,
    JudgeError,
    build_messages,
    calibration_path,
    check_judge_model,
    combine,
    default_judge_model,
    load_rubric,
    parse_verdict,
    request_params,
    rubric_hash,
)
from .models import ModelSpec, builtin_backends, known_models

DEFAULT_MODELS_FILE = "evals/models.yaml"


# -- running the judge outside pytest ------------------------------------------------------
class JudgeRunner:
    """Generates judge replies in bulk through the plugin's Scheduler and ResponseCache.

    Built from a models file (outside pytest) or from a running
    ``LLMEvalSession`` (shares its scheduler and cache). Requests are submitted
    all at once so in-process models batch them.
    """

    def __init__(self, specs: dict[str, ModelSpec], scheduler: Any, source: str, owned: bool) -> None:
        self.specs = specs
        self.scheduler = scheduler
        self.source = source
        self._owned = owned
        self._backends: dict[str, Any] = {}
        self._n = 0

    @classmethod
    def from_models_file(
        cls, models_file: str | Path, cache_path: str | Path | None = DEFAULT_CACHE, cache_mode: str = "rw"
    ) -> JudgeRunner:
        from .cache import ResponseCache
        from .scheduler import Scheduler

        specs = known_models(models_file)  # the built-in models (smollm2, ...), then the file's
        cache = ResponseCache(cache_path, cache_mode) if cache_path and cache_mode != "off" else None
        runner = cls(specs, None, str(models_file), owned=True)
        runner.scheduler = Scheduler(runner._backend, cache)
        return runner

    @classmethod
    def from_run(cls, selection: Any, generation: Any) -> JudgeRunner:
        """A runner on a pytest run's models, scheduler and cache (the run owns them)."""
        return cls(selection.specs(), generation.scheduler(), str(selection.models_file()), owned=False)

    def _backend(self, name: str) -> Any:
        if name not in self._backends:
            spec = self.specs[name]
            factories = builtin_backends()
            if spec.type not in factories:
                raise ConfigError(f"model {name}: no backend registered for type {spec.type!r}")
            self._backends[name] = factories[spec.type](spec)
        return self._backends[name]

    def generate_many(self, model: str, jobs: list[tuple[list[dict[str, str]], dict[str, Any]]]) -> list[str]:
        """Reply texts for (messages, params) pairs, in order. A failed call raises."""
        base = self.specs[model].params
        keyed = []
        for messages, params in jobs:
            self._n += 1
            keyed.append(
                (f"__calibration__/{id(self)}/{self._n}", model, Request.make(messages, **{**base, **params}))
            )
        self.scheduler.submit_many(keyed)  # all at once, so batch backends form full batches
        return [self.scheduler.jobs[key].future.result().text for key, _, _ in keyed]

    def close(self) -> None:
        if not self._owned:
            return
        self.scheduler.shutdown(cancel=True)
        if self.scheduler.cache is not None:
            self.scheduler.cache.close()
        for b in self._backends.values():
            try:
                b.close()
            except Exception:
                pass


# -- the report ------------------------------------------------------------------------------
@dataclass
class CalibrationReport:
    """Figures of one calibration run (written as JSON, read back by the ``judge`` fixture)."""

    judge_model: str
    calibration_file: str
    rubric_file: str
    rubric_sha256: str
    repeats: int
    date: str
    n_items: int
    agreement: dict[str, Any]  # temperature-0 verdicts vs human scores
    sampled_agreement: dict[str, Any]  # majority of the samples vs human scores
    self_consistency: dict[str, Any]
    parse_failures: int
    verdicts_total: int
    parse_failure_rate: float
    human_histogram: dict[str, int]
    judge_histogram: dict[str, int]  # temperature-0 verdicts
    duration_s: float
    items: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return p

    def summary_lines(self) -> list[str]:
        def f(v: Any) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        a, s, c = self.agreement, self.sampled_agreement, self.self_consistency
        return [
            f"judge {self.judge_model} on {self.calibration_file} ({self.n_items} items, rubric {self.rubric_file})",
            f"  temperature 0 vs people (n={a['n']}): exact {f(a['exact'])}, within-1 {f(a['within_one'])}, "
            f"quadratic kappa {f(a['kappa_quadratic'])}, spearman {f(a['spearman'])}",
            f"  majority of {self.repeats} samples vs people (n={s['n']}): exact {f(s['exact'])}, "
            f"within-1 {f(s['within_one'])}, quadratic kappa {f(s['kappa_quadratic'])}, "
            f"spearman {f(s['spearman'])}",
            f"  self-consistency over {self.repeats} samples at temperature {request_params(1)['temperature']} "
            f"(n={c['n']}): mean stdev {f(c['mean_stdev'])}, all agree {f(c['all_agree'])}",
            f"  parse failures: {self.parse_failures}/{self.verdicts_total} ({self.parse_failure_rate:.1%})",
            f"  score histograms 1..5: people {[self.human_histogram.get(str(k), 0) for k in range(1, 6)]}, "
            f"judge (t=0) {[self.judge_histogram.get(str(k), 0) for k in range(1, 6)]}",
            f"  took {self.duration_s:.1f}s",
        ]


def load_calibration(path: str | Path) -> list[dict[str, Any]]:
    """Calibration rows: each needs ``answer`` and an integer ``human_score`` from 1 to 5."""
    try:
        cases = load_cases(path)
    except DatasetError as e:
        raise ConfigError(str(e)) from None
    rows = []
    for c in cases:
        d = dict(c.data)
        score = d.get("human_score")
        if "answer" not in d or not isinstance(d["answer"], str):
            raise ConfigError(f"{c.source}: calibration case {c.id!r} needs a string 'answer'")
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
            raise ConfigError(f"{c.source}: calibration case {c.id!r} needs 'human_score' 1-5, got {score!r}")
        d["id"] = c.id
        rows.append(d)
    if not rows:
        raise ConfigError(f"{path}: no calibration cases")
    return rows


def run_calibration(
    session_or_models_file: Any,
    judge_model: str,
    calibration_file: str | Path,
    rubric_file: str | Path,
    repeats: int = 3,
    *,
    cache_path: str | Path | None = DEFAULT_CACHE,
    cache_mode: str = "rw",
) -> CalibrationReport:
    """Grade every calibration pair with ``judge_model`` and measure agreement with the human scores.

    ``session_or_models_file`` is a running ``LLMEvalSession`` (its models,
    scheduler and cache are used) or the path of a models.yaml (a scheduler with
    a response cache at ``cache_path`` is built for the run).
    """
    if repeats < 0:
        raise ValueError("repeats must be >= 0")
    started = time.monotonic()
    if isinstance(session_or_models_file, (str, Path)):
        runner = JudgeRunner.from_models_file(session_or_models_file, cache_path, cache_mode)
    else:
        run = session_or_models_file
        runner = JudgeRunner.from_run(run.selection, run.generation)
    try:
        check_judge_model(judge_model, runner.specs, runner.source)
        rubric = load_rubric(rubric_file)
        rows = load_calibration(calibration_file)
        plan: list[int | None] = [None, *range(1, repeats + 1)]
        jobs = []
        for row in rows:
            fields = {k: row[k] for k in FIELD_ORDER if k in row}
            messages = build_messages(rubric, row["answer"], fields)
            jobs += [(messages, request_params(sample)) for sample in plan]
        # Submit sample by sample (same parameters together) so batch backends batch across items.
        order = sorted(range(len(jobs)), key=lambda i: (i % len(plan), i))
        texts_sorted = runner.generate_many(judge_model, [jobs[i] for i in order])
        texts: list[str] = [""] * len(jobs)
        for i, t in zip(order, texts_sorted, strict=True):
            texts[i] = t
    finally:
        runner.close()

    items: list[dict[str, Any]] = []
    failures = 0
    for r, row in enumerate(rows):
        replies = texts[r * len(plan) : (r + 1) * len(plan)]
        parsed: list[int | None] = []
        bad: list[str] = []
        for raw in replies:
            try:
                parsed.append(parse_verdict(raw).score)
            except JudgeError:
                parsed.append(None)
                bad.append(raw)
        failures += len(bad)
        samples = [s for s in parsed[1:] if s is not None]
        items.append(
            {
                "id": row["id"],
                "human": row["human_score"],
                "judge_t0": parsed[0],
                "samples": parsed[1:],
                "sampled_majority": combine(samples) if samples else None,
                "unparsed": bad[:2],
                "t0_reply": replies[0][:300],
            }
        )
    t0 = [(it["human"], it["judge_t0"]) for it in items if it["judge_t0"] is not None]
    sm = [(it["human"], int(it["sampled_majority"])) for it in items if it["sampled_majority"] is not None]
    total = len(texts)
    return CalibrationReport(
        judge_model=judge_model,
        calibration_file=str(calibration_file),
        rubric_file=str(rubric_file),
        rubric_sha256=rubric_hash(rubric),
        repeats=repeats,
        date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        n_items=len(rows),
        agreement=agreement([h for h, _ in t0], [j for _, j in t0]),
        sampled_agreement=agreement([h for h, _ in sm], [j for _, j in sm]),
        self_consistency=self_consistency([[s for s in it["samples"] if s is not None] for it in items]),
        parse_failures=failures,
        verdicts_total=total,
        parse_failure_rate=failures / total if total else 0.0,
        human_histogram={str(k): v for k, v in sorted(Counter(it["human"] for it in items).items())},
        judge_histogram={str(k): v for k, v in sorted(Counter(j for _, j in t0).items())},
        duration_s=round(time.monotonic() - started, 2),
        items=items,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_llmeval.calibration",
        description="Measure how well a judge model agrees with human scores on a calibration set.",
    )
    parser.add_argument(
        "--judge",
        default=None,
        help="judge model from the models file (default: gpt-4o-mini with its key set, else smollm2)",
    )
    parser.add_argument(
        "--calibration", required=True, help="JSONL with answer, human_score and the judge's fields"
    )
    parser.add_argument("--rubric", required=True, help="rubric file")
    parser.add_argument("--models-file", default=DEFAULT_MODELS_FILE, help=f"default {DEFAULT_MODELS_FILE}")
    parser.add_argument(
        "--repeats", type=int, default=3, help="sampled verdicts per item for self-consistency"
    )
    parser.add_argument(
        "--output",
        default=None,
        help="JSON report (default data/judge_calibration-<judge>.json, where pytest looks)",
    )
    parser.add_argument(
        "--cache-path", default=DEFAULT_CACHE, help=f"response cache (default {DEFAULT_CACHE})"
    )
    parser.add_argument("--cache", default="rw", choices=("rw", "ro", "off", "refresh"), help="cache mode")
    args = parser.parse_args(argv)
    try:
        judge = args.judge or default_judge_model(known_models(args.models_file))
        report = run_calibration(
            args.models_file,
            judge,
            args.calibration,
            args.rubric,
            args.repeats,
            cache_path=args.cache_path,
            cache_mode=args.cache,
        )
    except LLMEvalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = report.write(args.output or calibration_path(".", judge))
    for line in report.summary_lines():
        print(line)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
