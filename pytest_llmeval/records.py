"""Records: each eval item's report -> one :class:`CaseResult`, collected in the controller.

A record travels in ``report.user_properties`` (so xdist ships it to the
controller and JUnit XML carries it); the controller keeps one per node id and
hands each new one to the run's outputs as it arrives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .collection import dataset_mark, is_eval_item, test_of
from .dataset import Case
from .generation import CALL_ERROR_KEY, COMPLETION_KEY, MESSAGES_KEY
from .redact import redact
from .repeats import sample_records
from .results import DEFAULT_SAMPLE_POLICY, USER_PROPERTY, CaseResult
from .scorers import _base as scoring

SCORES_KEY = pytest.StashKey[list]()


class Records:
    """Scores per item while it runs, its record at makereport, and the controller's collection."""

    def __init__(self, is_worker: bool) -> None:
        self.is_worker = is_worker
        self.results: dict[str, CaseResult] = {}  # controller: every item's record, by node id
        # Records made in this process, by nodeid: logreport takes the object instead of parsing
        # the JSON it also carries (which xdist workers ship to the controller).
        self.local: dict[str, CaseResult] = {}
        self.local_samples: dict[str, list[CaseResult]] = {}  # with repeats: every sample's record
        self.repeat_policy = DEFAULT_SAMPLE_POLICY  # the session sets --repeat-policy
        self._listeners: list[Callable[[CaseResult], None]] = []

    def subscribe(self, listener: Callable[[CaseResult], None]) -> None:
        """Call ``listener`` with each new record (the metrics store, the tracer)."""
        self._listeners.append(listener)

    def lookup(self, nodeid: str) -> CaseResult | None:
        """The record of ``nodeid`` made in this process or received from a worker."""
        return self.local.get(nodeid) or self.results.get(nodeid)

    # -- while an item runs -----------------------------------------------------------------
    @contextlib.contextmanager
    def scoring(self, item: pytest.Item) -> Iterator[None]:
        """Around the test call: scorers record into this item's list."""
        __tracebackhide__ = True
        store: list[dict[str, Any]] = []
        item.stash[SCORES_KEY] = store
        scoring.begin_item(store)
        try:
            yield
        finally:
            scoring.end_item()

    def attach(self, item: pytest.Item, report: pytest.TestReport, call: pytest.CallInfo[Any]) -> None:
        """At makereport: put the item's record on its call report (or its failed setup's)."""
        if not is_eval_item(item):
            return
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            # With repeats, one record per sample (repeats.py); the first is the item's own.
            recs = sample_records(item, make_record(item, report, call), self.repeat_policy)
            for rec in recs:
                prop = (USER_PROPERTY, rec.to_json())
                report.user_properties.append(prop)
                # The teardown report copies item.user_properties; JUnit XML reads it from there.
                item.user_properties.append(prop)
            if not self.is_worker:  # spares re-parsing the JSON in this process (xdist ships the JSON)
                self.local[item.nodeid] = recs[0]
                self.local_samples[item.nodeid] = recs

    def collect(self, report: pytest.TestReport) -> None:
        """Controller: take the records a report carries (once per item) and pass them on."""
        values = [value for key, value in report.user_properties if key == USER_PROPERTY]
        if not values or (report.when == "teardown" and report.nodeid in self.results):
            return  # nothing, or the same records again, carried by the teardown report
        recs = self.local_samples.get(report.nodeid) or [CaseResult.from_json(v) for v in values]
        for rec in recs:
            self.results[rec.nodeid] = rec
            for listener in self._listeners:
                listener(rec)


def make_record(item: pytest.Item, report: pytest.TestReport, call: pytest.CallInfo[Any]) -> CaseResult:
    """The :class:`CaseResult` of one eval item from its report and what the run stashed on it."""
    params = item.callspec.params  # type: ignore[attr-defined]
    case: Case = params["case"]
    comp = item.stash.get(COMPLETION_KEY, None)
    mark = dataset_mark(item)
    if report.when == "setup":
        outcome = "skipped" if report.skipped else "error"
    elif report.passed:
        outcome = "passed"
    elif report.skipped:
        outcome = "skipped"
    elif call.excinfo is not None and isinstance(call.excinfo.value, AssertionError):
        outcome = "failed"
    else:
        outcome = "error"
    error = None
    if outcome in ("error", "skipped") or (outcome == "failed" and report.longrepr is not None):
        error = short_error(report)
    rec = CaseResult(
        nodeid=item.nodeid,
        test=test_of(item.nodeid),
        model=str(params.get("model", "")),
        case_id=case.id,
        tags=list(case.tags),
        outcome=outcome,
        passed=outcome == "passed",
        scores=list(item.stash.get(SCORES_KEY, [])),
        main_score=mark.kwargs.get("main_score") if mark else None,
        error=redact(error) if error else None,
        messages=item.stash.get(MESSAGES_KEY, None),
        expected=case.data.get("expected", case.data.get("reference")),
        dataset=str(mark.kwargs.get("path")) if mark else None,
    )
    if comp is not None:
        apply_completion(rec, comp)
    else:
        err = item.stash.get(CALL_ERROR_KEY, None)
        if err is not None:  # a call that failed for good still counts its retries
            rec.retries = int(getattr(err, "retries", 0) or 0)
            causes = getattr(err, "causes", None)
            if causes:
                rec.extra = {"retry_causes": [redact(c) for c in causes]}
    return rec


def apply_completion(rec: CaseResult, comp: Any) -> None:
    """Copy what a record keeps of its completion: output, timing, tokens, cost, cache, retries."""
    rec.output = comp.text
    # An in-process batch has no latency of its own per item: its timing goes to extra
    # (time to the item's last token, seconds per token, batch size), never into latency_s.
    rec.latency_s = None if "batch_size" in comp.extra else comp.latency_s
    rec.prompt_tokens = comp.prompt_tokens
    rec.completion_tokens = comp.completion_tokens
    rec.cost = comp.cost
    rec.cached = comp.cached
    rec.retries = comp.retries
    rec.finish_reason = comp.finish_reason
    rec.extra = {k: v for k, v in comp.extra.items() if k in RECORDED_EXTRA}


# Completion.extra entries an item's record keeps.
RECORDED_EXTRA = (
    "batch_size",
    "time_to_last_token_s",
    "s_per_token",
    "output_bytes",
    "output_limit",
    "retry_causes",
    "cache",
)


def short_error(report: pytest.TestReport) -> str:
    """The one-line cause of a failed, errored or skipped item."""
    lr = report.longrepr
    if lr is None:
        return ""
    if isinstance(lr, tuple):  # skipped: (path, line, reason)
        return str(lr[2])
    crash = getattr(lr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)
    return str(lr)[-2000:]
