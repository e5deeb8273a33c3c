"""The judge as the second stage of the pipeline.

A test declares its judge with its dataset::

    @dataset("cases.jsonl", prompt="prompt.md",
             judge=JudgeSpec("rubric.md", fields=("question", "context", "reference")))
    def test_qa(case, completion, judge):
        judge.score(completion.text, at_least=3)   # the prepared verdict: no model call here

As soon as an item's completion lands, its judge request(s) (all samples at once) go to the judge
model's lane of the same scheduler: batched with other items' judge requests for an in-process
judge, up to ``max_concurrency`` in flight for a server, through the same response cache, retries
and budget. The ``judge`` fixture finds the prepared verdict by its request, so a declared verdict
is the very request the serial path would send. A ``judge.score(...)`` call whose request was not
prepared (an undeclared rubric, other fields) is generated synchronously, as before.

``--no-judge-stage`` grades declared judges in the test body (the serial path; for comparison).
Every judge that graded something is remembered (:class:`JudgeUse`) so that the end of the run
can measure it on its calibration file (:mod:`.judge_measure`).
"""

from __future__ import annotations

import functools
import re
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends.base import Request
from .collection import dataset_mark, test_of
from .judge import (
    FIELD_ORDER,
    build_messages,
    check_judge_model,
    choose_judge,
    load_rubric,
    request_params,
    rubric_hash,
)

CALIBRATION_NAME = "judge_calibration.jsonl"


@dataclass(frozen=True)
class JudgeSpec:
    """A test's judge, declared with its dataset (``@dataset(..., judge=JudgeSpec(...))``).

    ``rubric``: the rubric file, relative to the test file. ``fields``: the case fields shown to the
    judge (those a case lacks are left out). ``samples``: verdicts per answer (None: ``--judge-samples``,
    else one at temperature 0). ``aggregate``: how samples combine ("majority" or "mean").
    ``calibration``: answers with human scores to measure the judge on (relative to the test file;
    default: ``judge_calibration.jsonl`` beside the rubric, when there is one).
    """

    rubric: str
    fields: tuple[str, ...] = FIELD_ORDER
    samples: int | None = None
    aggregate: str = "majority"
    calibration: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.rubric, (str, Path)) or not str(self.rubric).strip():
            raise ValueError("JudgeSpec: rubric must be the path of a rubric file")
        if isinstance(self.fields, str):
            raise ValueError(
                f"JudgeSpec: fields must be a tuple of field names, got the string {self.fields!r}"
            )
        for f in self.fields:
            if not isinstance(f, str) or not re.fullmatch(r"[A-Za-z_][\w-]*", f):
                raise ValueError(f"JudgeSpec: field name {f!r} must be an identifier")
        if self.samples is not None and (isinstance(self.samples, bool) or int(self.samples) < 1):
            raise ValueError(f"JudgeSpec: samples must be at least 1, got {self.samples!r}")
        if self.aggregate not in ("majority", "mean"):
            raise ValueError(f"JudgeSpec: aggregate must be 'majority' or 'mean', got {self.aggregate!r}")

    def case_fields(self, case: Any) -> dict[str, Any]:
        """The declared fields of ``case`` that it has."""
        data = getattr(case, "data", case)
        return {f: data[f] for f in self.fields if f in data}


@dataclass
class JudgeUse:
    """A judge model that graded with a rubric in this run: what the end of the run measures."""

    model: str
    rubric_path: str  # absolute
    rubric_sha256: str
    calibration: str | None  # absolute path of the calibration file, None: unmeasured
    samples: int = 1
    aggregate: str = "majority"
    tests: set[str] = field(default_factory=set)

    def key(self) -> tuple[str, str, str | None, int, str]:
        return (self.model, self.rubric_sha256, self.calibration, self.samples, self.aggregate)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (an xdist worker sends its uses to the controller)."""
        return {**self.__dict__, "tests": sorted(self.tests)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JudgeUse:
        return cls(**{**d, "tests": set(d.get("tests", ()))})


def calibration_for(rubric_path: Path, declared: str | Path | None, base: Path) -> str | None:
    """The calibration file of a rubric: the declared one (it must exist), else the conventional
    ``judge_calibration.jsonl`` beside the rubric, else None (the judge is unmeasured)."""
    from .errors import ConfigError

    if declared:
        p = Path(declared) if Path(declared).is_absolute() else base / declared
        if not p.is_file():
            raise ConfigError(f"judge calibration file {p} does not exist")
        return str(p.resolve())
    auto = rubric_path.parent / CALIBRATION_NAME
    return str(auto.resolve()) if auto.is_file() else None


def merge_uses(groups: list[list[JudgeUse]]) -> list[JudgeUse]:
    """One use per (model, rubric, calibration, samples, aggregate), with the tests of all; in a stable order."""
    out: dict[tuple[Any, ...], JudgeUse] = {}
    for uses in groups:
        for u in uses:
            have = out.get(u.key())
            if have is None:
                out[u.key()] = JudgeUse(**{**u.__dict__, "tests": set(u.tests)})
            else:
                have.tests |= u.tests
    return [out[k] for k in sorted(out, key=lambda k: (k[0], k[1], k[2] or "", k[3], k[4]))]


class JudgeStage:
    """Owned by :class:`~pytest_llmeval.generation.Generation`: submits declared judges' requests when
    completions land, hands the fixture its prepared verdicts, and remembers the judges used."""

    def __init__(self, generation: Any) -> None:
        self.generation = generation
        self.config = generation.config
        self.enabled = not self.config.getoption("no_judge_stage", False)
        self._choice: tuple[str, str] | None = None
        self._ready: dict[str, threading.Event] = {}  # node id -> set once its judge requests are in
        self._prepared: dict[str, dict[str, Future[Any]]] = {}  # node id -> request hash -> future
        self._failed: dict[str, BaseException] = {}  # node id -> why its judge requests could not be made
        self.uses: dict[tuple[Any, ...], JudgeUse] = {}
        self.announced = False
        self._lock = threading.Lock()

    # -- which judge -------------------------------------------------------------------------
    def choice(self) -> tuple[str, str]:
        """(judge model, why it is the judge), resolved once and checked runnable."""
        if self._choice is None:
            sel = self.generation.selection
            specs = sel.specs()
            name, why = choose_judge(self.config, specs, under_test=tuple(sel.selected))
            check_judge_model(name, specs, str(sel.models_file()))
            self._choice = (name, why)
        return self._choice

    def configured(self) -> bool:
        """Whether the judge is named (``--judge``, the ini key): then the header names it too."""
        return bool(
            self.config.getoption("judge", None) or (self.config.getini("llmeval_judge") or "").strip()
        )

    def header_line(self) -> str:
        name, why = self.choice()
        return f"llmeval: judge {name} ({why})"

    def announce(self) -> None:
        """Say which judge grades and why, once, when the session header did not."""
        from .console import write_line
        from .redact import safe_terminal

        if self.announced or self.generation.is_worker:
            return
        self.announced = True
        try:
            write_line(self.config, safe_terminal(self.header_line(), 400), cyan=True)
        except Exception:  # the fixture reports a bad judge with its cause; no second message here
            pass

    # -- declared judges ---------------------------------------------------------------------
    @staticmethod
    def spec_of(item: Any) -> JudgeSpec | None:
        mark = dataset_mark(item)
        spec = mark.kwargs.get("judge") if mark is not None else None
        return spec if isinstance(spec, JudgeSpec) else None

    def requests(self, item: Any, spec: JudgeSpec, answer: str) -> tuple[str, list[Request]]:
        """The judge model and the request of each verdict of ``item``'s answer (all samples)."""
        model = self.choice()[0]
        text = load_rubric(Path(item.path).parent / spec.rubric)
        case = item.callspec.params["case"]
        messages = build_messages(text, str(answer), spec.case_fields(case))
        n = spec.samples if spec.samples is not None else self.config.getoption("judge_samples", None)
        plan: list[int | None] = [None] if not n or n == 1 else list(range(1, n + 1))
        base = self.generation.selection.specs()[model].params
        return model, [Request.make(messages, **{**base, **request_params(s)}) for s in plan]

    def attach(self, items: list[Any]) -> None:
        """After the completions are submitted: each declared item's judge requests follow its completion."""
        if not self.enabled:
            return
        sched = self.generation.scheduler()
        for it in items:
            spec = self.spec_of(it)
            job = sched.job(it.nodeid) if spec is not None else None
            if job is None or it.nodeid in self._ready:
                continue
            ready = threading.Event()
            self._ready[it.nodeid] = ready
            job.future.add_done_callback(functools.partial(self._landed, it, spec, ready))

    def _landed(self, item: Any, spec: JudgeSpec, ready: threading.Event, fut: Future[Any]) -> None:
        """The completion is in (on the lane's thread, or at once for a cache hit): submit its judge."""
        try:
            if fut.cancelled() or fut.exception() is not None:
                return  # the item errors (or skips) on its completion; nothing to judge
            model, reqs = self.requests(item, spec, fut.result().text)
            sched = self.generation.scheduler()
            keys = [f"__judge__/{item.nodeid}/{i}" for i in range(len(reqs))]
            sched.submit_many([(k, model, r) for k, r in zip(keys, reqs, strict=True)])
            with self._lock:
                self._prepared[item.nodeid] = {
                    r.request_hash(): sched.jobs[k].future for k, r in zip(keys, reqs, strict=True)
                }
        except BaseException as e:  # a missing rubric, a bad judge: the item's judge call says so
            self._failed[item.nodeid] = e
        finally:
            ready.set()

    def prepared(self, item: Any, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> Any:
        """The future of a prepared verdict with exactly this request, or None (then call synchronously)."""
        ready = self._ready.get(getattr(item, "nodeid", ""))
        if ready is None:
            return None
        ready.wait()
        if item.nodeid in self._failed:
            return None  # the synchronous call meets the same problem and reports it
        base = self.generation.selection.specs()[model].params
        key = Request.make(messages, **{**base, **params}).request_hash()
        with self._lock:
            return self._prepared.get(item.nodeid, {}).get(key)

    # -- judges used ---------------------------------------------------------------------------
    def note(
        self, item: Any, model: str, rubric_path: Path, rubric_text: str, samples: int, aggregate: str
    ) -> None:
        """A judge graded an answer of ``item``: remember it (and its calibration file) for the end of the run."""

        spec = self.spec_of(item)
        declared = (
            spec.calibration if spec is not None and Path(spec.rubric) == _rel(rubric_path, item) else None
        )
        base = Path(item.path).parent
        use = JudgeUse(
            model,
            str(rubric_path.resolve()),
            rubric_hash(rubric_text),
            calibration_for(rubric_path, declared, base),
            samples,
            aggregate,
        )
        with self._lock:
            have = self.uses.setdefault(use.key(), use)
            have.tests.add(test_of(item.nodeid))

    def measures(self, worker_uses: list[list[dict[str, Any]]] | None = None) -> tuple[Any, ...]:
        """Measure every judge used here or in the xdist workers (controller, before the scheduler stops)."""
        uses = merge_uses(
            [list(self.uses.values()), *[[JudgeUse.from_dict(d) for d in w] for w in worker_uses or []]]
        )
        if not uses:
            return ()
        from .judge_measure import measure  # numpy: only a run that used a judge pays for it

        specs = self.generation.selection.specs()
        sched = self.generation.scheduler() if any(u.calibration for u in uses) else None
        return tuple(measure(sched, specs, u, Path(self.config.rootpath)) for u in uses)

    def worker_output(self) -> list[dict[str, Any]]:
        """What an xdist worker sends the controller: the judges it used."""
        return [u.to_dict() for u in self.uses.values()]


def _rel(rubric_path: Path, item: Any) -> Path | None:
    try:
        return rubric_path.relative_to(Path(item.path).parent)
    except ValueError:
        return None
