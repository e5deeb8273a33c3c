"""pytest-html integration: eval columns, per-item details, and a summary with charts and filters.

``plugin.pytest_configure`` registers :class:`HtmlReport` only when pytest-html is
present. By default a run with eval items writes a self-contained report to
``<run folder>/report.html``; ``--html PATH`` works as usual and gets the same
content; ``--no-llmeval-report`` (or ``--no-metrics``) turns the default off.

pytest-html inserts table cells and html extras into the page raw. Everything here
that came from a model, a dataset, a case or an error goes through :func:`esc`
(``redact`` then ``html.escape``), and the page's script reads its filter values
from escaped attributes, never from interpolated JavaScript.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .collection import is_eval_item
from .redact import redact
from .report_parts import FOLD_CHARS, _num, esc, fold, render_details
from .report_repeats import item_samples
from .report_summary import bar_chart, render_summary, side_by_side
from .results import USER_PROPERTY, CaseResult

if TYPE_CHECKING:
    from .outcome import RunOutcome
    from .records import Records

REPORT_NAME = "report.html"
_COLUMNS = (  # (data key, header, sortable)
    ("model", "Model", True),
    ("case", "Case", True),
    ("tags", "Tags", False),
    ("outcome", "Outcome", True),
    ("score", "Main score", True),
    ("latency", "Latency", False),
    ("tokens", "Tokens in/out", False),
    ("cost", "Cost", False),
    ("cached", "Cached", False),
)


def default_run_dir(config: pytest.Config, run_id: str) -> Path:
    """The run folder the metrics store uses: ``--output DIR`` or ``<llmeval_runs_dir>/<run id>``."""
    from .store_open import run_dir_for

    return Path(run_dir_for(config, run_id))


def _wants_default_report(config: pytest.Config, has_models: bool) -> bool:
    opt = config.option
    if getattr(opt, "htmlpath", None):
        return False
    off = ("no_llmeval_report", "no_metrics", "collectonly", "list_models", "help", "showfixtures")
    if any(getattr(opt, name, False) for name in off + ("show_fixtures_per_test", "markers")):
        return False
    return has_models


class HtmlReport:
    """pytest-html hook implementations, registered as plugin ``llmeval-html`` (controller only).

    Per item it renders the record the records stage made (or the one a worker
    shipped); the summary block is rendered from the run's outcome, which the
    session hands over with :meth:`set_outcome` before pytest-html writes the page.
    """

    def __init__(self, config: pytest.Config, run_id: str, has_models: bool, records: Records) -> None:
        self.config = config
        self.run_id = run_id
        self.records_stage = records
        self.records: dict[str, CaseResult] = {}
        self.outcome: RunOutcome | None = None
        self.default_path: Path | None = None
        self.report_path: Path | None = None  # where the page is written, once it is known to be
        self._made_dir: Path | None = None
        self._run_dir = Path()
        # Eval columns only where eval items can exist: every eval item needs a selected model.
        self.columns = has_models
        if _wants_default_report(config, has_models):
            # pytest-html reads these in its own pytest_configure, which runs after ours (tryfirst).
            run_dir = default_run_dir(config, run_id)
            self.default_path = run_dir / REPORT_NAME
            # pytest-html makes the folder, parents included, at configure time: remember the
            # topmost one that was missing, so that a run without evals leaves none of them.
            top = run_dir
            while not top.exists() and not top.parent.exists():
                top = top.parent
            self._made_dir = None if run_dir.exists() else top
            self._run_dir = run_dir
            config.option.htmlpath = str(self.default_path)
            config.option.self_contained_html = True

    def set_outcome(self, outcome: RunOutcome) -> None:
        """The finished run, for the summary block (called before pytest-html renders)."""
        self.outcome = outcome

    # -- the default report exists only for runs with eval items ---------------------
    def _html_report(self) -> Any:
        from pytest_html.basereport import BaseReport

        for p in self.config.pluginmanager.get_plugins():
            if isinstance(p, BaseReport):
                return p
        return None

    def _drop_default(self) -> None:
        rep = self._html_report()
        if rep is not None and self.default_path is not None:
            self.config.pluginmanager.unregister(rep)
        self.default_path = None

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # Under xdist the controller collects nothing; pytest_runtestloop decides there.
        if self.config.pluginmanager.hasplugin("dsession"):
            return
        if not any(is_eval_item(it) for it in session.items):
            if self.default_path is not None:
                self._drop_default()
            self._drop_columns()

    def _drop_columns(self) -> None:
        """No eval items: a user's own --html report keeps pytest-html's plain columns."""
        self.columns = False
        rep = self._html_report()
        if rep is None:
            return
        ours = tuple(f'data-column-type="{key}"' for key, _, _ in _COLUMNS)
        header = rep._report.table_header  # written at sessionstart, before collection
        rep._report.table_header = [c for c in header if not any(k in c for k in ours)]

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Iterator[None]:
        try:
            return (yield)
        finally:
            self._settle()

    def _settle(self) -> None:
        """After the test loop: drop an unneeded default report, else publish its path."""
        if not self.records_stage.results:
            if self.default_path is not None:
                self._drop_default()
            return
        rep = self._html_report()
        if rep is None:
            return
        path = getattr(rep, "_report_path", None)
        self.report_path = Path(path or self.config.option.htmlpath)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        top = self._made_dir
        if top is None:
            return
        d = self._run_dir
        while d.is_dir() and not any(d.iterdir()):  # empty folders only, from the run's up to top
            d.rmdir()
            if d == top:
                break
            d = d.parent

    # -- per item ----------------------------------------------------------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # The teardown report repeats the record (for JUnit XML); one details block per item.
        if report.when == "teardown" or not self.config.option.htmlpath:
            return  # no HTML report is written: rendering details would be wasted work
        if not any(k == USER_PROPERTY for k, _ in getattr(report, "user_properties", None) or ()):
            return
        # The record object made in this process, else parsed from the report (xdist).
        rec = self.records_stage.local.get(report.nodeid) or _record_of(report)
        if rec is None:
            return
        self.records[report.nodeid] = rec
        from pytest_html import extras

        samples = item_samples(report, self.records_stage.local_samples)  # with --repeat, side by side
        report.extras = [*getattr(report, "extras", []), extras.html(render_details(rec) + samples)]

    @pytest.hookimpl(wrapper=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> Iterator[None]:
        """One line names the report: the summary's ``HTML report: PATH``, not pytest-html's second one."""
        if self.outcome is None or self.outcome.report_path is None:
            return (yield)
        original = terminalreporter.write_sep

        def write_sep(sep: str, title: str | None = None, **kw: Any) -> Any:
            if title and title.startswith("Generated html report: "):
                return None
            return original(sep, title, **kw)

        terminalreporter.write_sep = write_sep
        try:
            return (yield)
        finally:
            del terminalreporter.write_sep  # the class's method again

    def pytest_html_report_title(self, report: Any) -> None:
        if self.default_path is not None:
            report.title = f"LLM eval report {self.run_id}"

    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        if not self.columns:
            return
        at = _find(cells, 'data-column-type="testId"') + 1 or len(cells)
        for key, label, sortable in reversed(_COLUMNS):
            cls = ' class="sortable"' if sortable else ""
            cells.insert(at, f'<th{cls} data-column-type="{key}">{label}</th>')

    def pytest_html_results_table_row(self, report: Any, cells: list[str]) -> None:
        test_at = _find(cells, 'class="col-testId"')
        if test_at >= 0:
            # pytest-html puts the node id in raw; a parametrize id may hold markup.
            when = getattr(report, "when", "call")
            suffix = "" if when in ("call", None) else f"::{when}"
            cells[test_at] = f'<td class="col-testId">{esc(report.nodeid + suffix)}</td>'
        if not self.columns:
            return
        rec = self.records.get(report.nodeid) or self.records_stage.lookup(report.nodeid)
        new = row_cells(rec) if rec is not None else [f'<td class="col-{k}"></td>' for k, _, _ in _COLUMNS]
        at = test_at + 1 or len(cells)
        cells[at:at] = new

    def pytest_html_results_table_html(self, report: Any, data: list[str]) -> None:
        # The log is escaped by pytest-html already; it may still quote a secret.
        data[:] = [redact(x) for x in data]

    def pytest_html_results_summary(
        self, prefix: list[str], summary: list[str], postfix: list[str], session: Any
    ) -> None:
        if self.outcome is not None and self.outcome.records:
            postfix.append(render_summary(self.outcome))


def _find(cells: list[str], marker: str) -> int:
    for i, c in enumerate(cells):
        if marker in str(c):
            return i
    return -1


def _record_of(report: Any) -> CaseResult | None:
    """The item's record from the report (the last one: a rerun appends its own)."""
    found = [v for k, v in getattr(report, "user_properties", None) or () if k == USER_PROPERTY]
    for value in reversed(found):
        try:
            rec = CaseResult.from_json(value)
        except (ValueError, TypeError):
            return None
        if rec.sample == 0:  # with repeats the item's row shows its first sample
            return rec
    return None


# -- cells -------------------------------------------------------------------------------
def row_cells(rec: CaseResult) -> list[str]:
    """The eval columns of one results-table row; the model cell carries the filter attributes."""
    tags_json = json.dumps(list(rec.tags), ensure_ascii=False)
    attrs = f'data-llm-model="{esc(rec.model)}" data-llm-tags="{esc(tags_json)}" data-llm-outcome="{esc(rec.outcome)}"'
    cost = "–" if not rec.cost else f"${rec.cost:.4f}"
    return [
        f'<td class="col-model" {attrs}>{esc(rec.model)}</td>',
        f'<td class="col-case">{esc(rec.case_id)}</td>',
        f'<td class="col-tags">{esc(", ".join(map(str, rec.tags)))}</td>',
        f'<td class="col-outcome llm-{esc(rec.outcome)}">{esc(rec.outcome)}</td>',
        f'<td class="col-score">{_num(rec.main_value())}</td>',
        f'<td class="col-latency">{_latency(rec)}</td>',
        f'<td class="col-tokens">{rec.prompt_tokens} / {rec.completion_tokens}</td>',
        f'<td class="col-cost">{cost}</td>',
        f'<td class="col-cached">{"yes" if rec.cached else "no"}</td>',
    ]


def _latency(rec: CaseResult) -> str:
    """The request's latency; for an item of an in-process batch, its time to last token, named so."""
    ttlt = (rec.extra or {}).get("time_to_last_token_s")
    if rec.latency_s is not None or ttlt is None:
        return _num(rec.latency_s, "{:.2f} s")
    return f'<span title="time from its batch start to its last token">{ttlt:.2f} s to last token</span>'


__all__ = [
    "FOLD_CHARS",
    "HtmlReport",
    "bar_chart",
    "default_run_dir",
    "esc",
    "fold",
    "render_details",
    "render_summary",
    "row_cells",
    "side_by_side",
]
