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

import html
import json
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from .redact import redact
from .results import USER_PROPERTY, CaseResult

REPORT_NAME = "report.html"
FOLD_CHARS = 400  # longer texts (or more lines) fold into <details>
FOLD_LINES = 8
_ASSETS = Path(__file__).parent
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


def esc(value: Any) -> str:
    """Text fit for HTML content and quoted attributes: secrets redacted, markup escaped."""
    return html.escape(redact("" if value is None else str(value)), quote=True)


def default_run_dir(config: pytest.Config, run_id: str) -> Path:
    """The run folder the metrics store will use: ``--output DIR`` or ``<llmeval_runs_dir>/<run id>``."""
    try:
        from .store import run_dir_for

        return Path(run_dir_for(config, run_id))
    except ImportError:
        pass
    out = config.getoption("llmeval_output", None)
    if out:
        p = Path(out).expanduser()
        return p if p.is_absolute() else Path(config.invocation_params.dir) / p
    runs = Path(config.getini("llmeval_runs_dir") or "data/runs")
    return (runs if runs.is_absolute() else config.rootpath / runs) / run_id


def _wants_default_report(config: pytest.Config, session: Any) -> bool:
    opt = config.option
    if getattr(opt, "htmlpath", None) or session.is_worker:
        return False
    off = ("no_llmeval_report", "no_metrics", "collectonly", "list_models", "help", "showfixtures")
    if any(getattr(opt, name, False) for name in off + ("show_fixtures_per_test", "markers")):
        return False
    return bool(session.selected)


class HtmlReport:
    """pytest-html hook implementations, registered as plugin ``llmeval-html``."""

    def __init__(self, config: pytest.Config, session: Any) -> None:
        self.config = config
        self.session = session
        self.records: dict[str, CaseResult] = {}
        self.default_path: Path | None = None
        self._made_dir: Path | None = None
        # Eval columns only where eval items can exist: every eval item needs a selected model.
        self.columns = bool(session.selected)
        if _wants_default_report(config, session):
            # pytest-html reads these in its own pytest_configure, which runs after ours (tryfirst).
            run_dir = default_run_dir(config, session.run_id)
            self.default_path = run_dir / REPORT_NAME
            self._made_dir = None if run_dir.exists() else run_dir
            config.option.htmlpath = str(self.default_path)
            config.option.self_contained_html = True

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
        if self.default_path is None or self.config.pluginmanager.hasplugin("dsession"):
            return
        if not any(_is_eval(it) for it in session.items):
            self._drop_default()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Iterator[None]:
        try:
            return (yield)
        finally:
            self._settle()

    def _settle(self) -> None:
        """After the test loop: drop an unneeded default report, else publish its path.

        Before pytest_sessionfinish, so the metrics store records ``session.report_path``.
        """
        if not self.session.results:
            if self.default_path is not None:
                self._drop_default()
            return
        rep = self._html_report()
        if rep is None:
            return
        path = getattr(rep, "_report_path", None)
        run_dir = self.session.run_dir
        if self.default_path is not None and run_dir is not None and path is not None:
            wanted = Path(run_dir) / REPORT_NAME
            if wanted != path:  # the metrics store chose another run folder: follow it
                wanted.parent.mkdir(parents=True, exist_ok=True)
                rep._report_path = path = wanted
        self.session.report_path = path or Path(self.config.option.htmlpath)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        d = self._made_dir
        if d is not None and d.is_dir() and not any(d.iterdir()):
            d.rmdir()

    # -- per item ----------------------------------------------------------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # The teardown report repeats the record (for JUnit XML); one details block per item.
        if report.when == "teardown" or not self.config.option.htmlpath:
            return  # no HTML report is written: rendering details would be wasted work
        if not any(k == USER_PROPERTY for k, _ in getattr(report, "user_properties", None) or ()):
            return
        # The record object made in this process, else parsed from the report (xdist).
        rec = self.session.local_records.get(report.nodeid) or _record_of(report)
        if rec is None:
            return
        self.records[report.nodeid] = rec
        from pytest_html import extras

        report.extras = [*getattr(report, "extras", []), extras.html(render_details(rec))]

    def pytest_html_report_title(self, report: Any) -> None:
        if self.default_path is not None:
            report.title = f"LLM eval report {self.session.run_id}"

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
        rec = self.records.get(report.nodeid) or self.session.results.get(report.nodeid)
        new = row_cells(rec) if rec is not None else [f'<td class="col-{k}"></td>' for k, _, _ in _COLUMNS]
        at = test_at + 1 or len(cells)
        cells[at:at] = new

    def pytest_html_results_table_html(self, report: Any, data: list[str]) -> None:
        # The log is escaped by pytest-html already; it may still quote a secret.
        data[:] = [redact(x) for x in data]

    def pytest_html_results_summary(
        self, prefix: list[str], summary: list[str], postfix: list[str], session: Any
    ) -> None:
        if self.session.results:
            postfix.append(render_summary(self.session))


def _find(cells: list[str], marker: str) -> int:
    for i, c in enumerate(cells):
        if marker in str(c):
            return i
    return -1


def _is_eval(item: pytest.Item) -> bool:
    cs = getattr(item, "callspec", None)
    return cs is not None and "case" in cs.params and "model" in cs.params


def _record_of(report: Any) -> CaseResult | None:
    """The item's record from the report (the last one: a rerun appends its own)."""
    found = [v for k, v in getattr(report, "user_properties", None) or () if k == USER_PROPERTY]
    if not found:
        return None
    try:
        return CaseResult.from_json(found[-1])
    except (ValueError, TypeError):
        return None


# -- cells and details -----------------------------------------------------------------
def _num(v: float | None, fmt: str = "{:.3f}") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


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
        f'<td class="col-latency">{_num(rec.latency_s, "{:.2f} s")}</td>',
        f'<td class="col-tokens">{rec.prompt_tokens} / {rec.completion_tokens}</td>',
        f'<td class="col-cost">{cost}</td>',
        f'<td class="col-cached">{"yes" if rec.cached else "no"}</td>',
    ]


def fold(text: Any, label: str = "", open_: bool = False) -> str:
    """Escaped text in a <pre>; long texts fold into <details> with a one-line preview."""
    s = "" if text is None else str(text)
    body = f'<pre class="llm-text">{esc(s)}</pre>'
    lines = s.count("\n") + 1
    if len(s) <= FOLD_CHARS and lines <= FOLD_LINES:
        return body
    first = s.strip().splitlines()[0] if s.strip() else ""
    preview = first[:80] + ("…" if len(first) > 80 or lines > 1 else "")
    head = f"{esc(label) + ': ' if label else ''}{esc(preview)} <i>({len(s)} chars, {lines} lines)</i>"
    return f'<details class="llm-fold"{" open" if open_ else ""}><summary>{head}</summary>{body}</details>'


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, indent=2, default=str)
    except (TypeError, ValueError):
        return str(value)


def _messages(messages: Sequence[Any] | None) -> str:
    if not messages:
        return '<p class="llm-muted">no prompt recorded</p>'
    out = []
    for m in messages:
        if isinstance(m, dict):
            role, content = m.get("role", "?"), m.get("content", "")
        elif isinstance(m, (list, tuple)) and len(m) == 2:
            role, content = m
        else:
            role, content = "?", m
        out.append(
            f'<div class="llm-msg"><span class="llm-role">{esc(role)}</span>{fold(_as_text(content))}</div>'
        )
    return "".join(out)


def _scores_table(scores: list[dict[str, Any]]) -> str:
    if not scores:
        return '<p class="llm-muted">no scores recorded</p>'
    rows = []
    for s in scores:
        ok = s.get("passed")
        mark = '<span class="llm-passed">pass</span>' if ok else '<span class="llm-failed">fail</span>'
        thr = s.get("threshold")
        rows.append(
            f"<tr><td>{esc(s.get('name'))}</td><td>{_num(_float(s.get('value')))}</td>"
            f"<td>{'' if thr is None else _num(_float(thr), '{:g}')}</td><td>{mark}</td>"
            f'<td class="llm-expl">{esc(s.get("explanation") or "")}</td></tr>'
        )
    head = "<tr><th>score</th><th>value</th><th>threshold</th><th></th><th>explanation</th></tr>"
    return f'<table class="llm-table">{head}{"".join(rows)}</table>'


def _float(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def render_details(rec: CaseResult) -> str:
    """The html extra of one item: prompt, output, expected, scores, judge reasoning, error."""
    parts = [f'<div class="llm-detail" data-llm-case="{esc(rec.case_id)}">']
    meta = [
        f"model <b>{esc(rec.model)}</b>",
        f"case <b>{esc(rec.case_id)}</b>",
        f"outcome <b class='llm-{esc(rec.outcome)}'>{esc(rec.outcome)}</b>",
    ]
    if rec.finish_reason:
        meta.append(f"finish {esc(rec.finish_reason)}")
    if rec.retries:
        meta.append(f"{rec.retries} retries")
    if rec.cached:
        meta.append("from cache")
    if rec.dataset:
        meta.append(f"dataset {esc(rec.dataset)}")
    parts.append(f'<p class="llm-meta">{" · ".join(meta)}</p>')
    if rec.error:
        parts.append(f'<h4>Error</h4><pre class="llm-text llm-error">{esc(rec.error)}</pre>')
    parts.append('<div class="llm-grid">')
    parts.append(
        f"<section><h4>Output</h4>{fold(rec.output) if rec.output is not None else '<p class=llm-muted>no output</p>'}</section>"
    )
    expected = "<p class=llm-muted>none</p>" if rec.expected is None else fold(_as_text(rec.expected))
    parts.append(f"<section><h4>Expected</h4>{expected}</section>")
    parts.append("</div>")
    parts.append(f"<h4>Scores</h4>{_scores_table(rec.scores)}")
    judged = [s for s in rec.scores if str(s.get("name", "")).startswith("judge") and s.get("explanation")]
    for s in judged:
        parts.append(
            f"<h4>Judge reasoning ({esc(s.get('name'))})</h4>{fold(s.get('explanation'), open_=True)}"
        )
    n = len(rec.messages or ())
    parts.append(
        f'<details class="llm-prompt"><summary>Prompt ({n} message{"s" if n != 1 else ""})</summary>'
        f"{_messages(rec.messages)}</details>"
    )
    parts.append("</div>")
    return "".join(parts)


# -- summary -------------------------------------------------------------------------------
def _groups(results: dict[str, CaseResult]) -> dict[tuple[str, str], list[CaseResult]]:
    g: dict[tuple[str, str], list[CaseResult]] = defaultdict(list)
    for r in results.values():
        g[(r.test, r.model)].append(r)
    return g


def _mean_main(rs: list[CaseResult]) -> float | None:
    vals = [v for r in rs if r.outcome != "skipped" and (v := r.main_value()) is not None]
    return sum(vals) / len(vals) if vals else None


def _short_test(test: str) -> str:
    return test.split("::", 1)[-1]


def render_summary(session: Any) -> str:
    """The block above the results table: aggregates, gate, judge agreement, charts, filters, side by side."""
    results: dict[str, CaseResult] = session.results
    groups = _groups(results)
    parts = [_style(), '<section id="llmeval-summary" class="llm-summary">', "<h2>LLM evals</h2>"]
    parts.append(_verdict_badge(session))
    parts.append(_aggregates_table(session, groups))
    parts.append(_gate_section(session))
    parts.append(_comparisons_section(session))
    agreement = getattr(session, "judge_agreement", None)
    if agreement:
        parts.append(
            f'<p class="llm-judge-agreement">Judge agreement with people: <b>{esc(agreement)}</b></p>'
        )
    parts.append(_charts(session, groups))
    parts.append(_filters(results))
    parts.append(side_by_side(results))
    parts.append("</section>")
    parts.append(_script())
    return "".join(parts)


def _style() -> str:
    return f"<style>{(_ASSETS / 'report.css').read_text(encoding='utf-8')}</style>"


def _script() -> str:
    # A static file: no value is interpolated into script text.
    return f"<script>{(_ASSETS / 'report.js').read_text(encoding='utf-8')}</script>"


def _verdict_badge(session: Any) -> str:
    v = session.verdict
    if v is None:
        note = getattr(session, "baseline_note", None) or "no baseline given; not gated"
        return f'<p class="llm-gate"><span class="llm-badge llm-badge-none">not gated</span> {esc(note)}</p>'
    cls, word = ("llm-badge-pass", "gate PASSED") if v.passed else ("llm-badge-fail", "gate FAILED")
    mode = esc(getattr(v, "mode", ""))
    return f'<p class="llm-gate"><span class="llm-badge {cls}">{word}</span> mode {mode}</p>'


def _aggregates_table(session: Any, groups: dict[tuple[str, str], list[CaseResult]]) -> str:
    head = (
        "<tr><th>test</th><th>model</th><th>n</th><th>pass rate</th><th>mean main score</th>"
        "<th>scores (mean)</th><th>latency p50 / p95</th><th>tokens in / out</th><th>cost</th>"
        "<th>cached</th><th>errors</th><th>skipped</th></tr>"
    )
    rows = []
    for a in session.aggregates:
        mm = _mean_main(groups.get((a.test, a.model), []))
        scores = ", ".join(
            f"{esc(k)} {v:.3f}" + (f" (rate {a.rates[k]:.0%})" if k in a.rates else "")
            for k, v in a.scores.items()
        )
        rows.append(
            f"<tr><td title='{esc(a.test)}'>{esc(_short_test(a.test))}</td><td>{esc(a.model)}</td><td>{a.n}</td>"
            f"<td>{a.pass_rate:.1%} ({a.passed}/{a.n})</td><td>{_num(mm)}</td><td>{scores}</td>"
            f"<td>{_num(a.latency_p50, '{:.2f}s')} / {_num(a.latency_p95, '{:.2f}s')}</td>"
            f"<td>{a.prompt_tokens} / {a.completion_tokens}</td>"
            f"<td>${a.cost:.4f} (spent ${a.cost_spent:.4f})</td><td>{a.cached}</td>"
            f"<td>{a.errors}</td><td>{a.skipped}</td></tr>"
        )
    return f'<h3>Aggregates per test and model</h3><table class="llm-table" id="llm-aggregates">{head}{"".join(rows)}</table>'


def _gate_section(session: Any) -> str:
    v = session.verdict
    if v is None:
        return ""
    parts = ["<h3>Against the baseline</h3>"]
    if v.rows:
        head = (
            "<tr><th>test [model]</th><th>metric</th><th>baseline</th><th>current</th>"
            "<th>delta [95% CI]</th><th>p</th><th>verdict</th><th>rule</th></tr>"
        )
        rows = []
        for r in v.rows:
            delta = "" if r.delta is None else f"{r.delta:+.3f}"
            if r.ci is not None and not any(math.isnan(x) for x in r.ci):
                delta += f" [{r.ci[0]:+.3f}, {r.ci[1]:+.3f}]"
            p = "" if r.p_value is None else f"{r.p_value:.3g}"
            cls = {"FAIL": "llm-failed", "ok": "llm-passed"}.get(r.status, "llm-muted")
            rows.append(
                f"<tr><td>{esc(_short_test(r.test))} [{esc(r.model)}]</td><td>{esc(r.metric)}</td>"
                f"<td>{_num(r.baseline)}</td><td>{_num(r.current)}</td><td>{delta}</td><td>{p}</td>"
                f"<td class='{cls}'>{esc(r.status)}</td><td>{esc(r.rule)}</td></tr>"
            )
        parts.append(f'<table class="llm-table" id="llm-gate">{head}{"".join(rows)}</table>')
    for n in v.notes:
        parts.append(f'<p class="llm-note">note: {esc(n)}</p>')
    for reason in v.reasons:
        parts.append(f'<p class="llm-note llm-failed">gate failed: {esc(reason)}</p>')
    return "".join(parts)


def _comparisons_section(session: Any) -> str:
    comps = getattr(session, "model_comparisons", None) or []
    if not comps:
        return ""
    head = (
        "<tr><th>test</th><th>model vs reference</th><th>shared cases</th><th>pass rate</th>"
        "<th>delta [95% CI]</th><th>won / lost</th><th>McNemar p</th><th>main score [95% CI of delta]</th></tr>"
    )
    rows = []
    for mc in comps:
        score = ""
        if mc.score is not None and mc.ref_score is not None and mc.score_ci is not None:
            score = f"{mc.score:.3f} vs {mc.ref_score:.3f} [{mc.score_ci[0]:+.3f}, {mc.score_ci[1]:+.3f}]"
        rows.append(
            f"<tr><td>{esc(_short_test(mc.test))}</td><td>{esc(mc.model)} vs {esc(mc.reference)}</td>"
            f"<td>{mc.n}</td><td>{mc.pass_rate:.1%} vs {mc.ref_pass_rate:.1%}</td>"
            f"<td>{mc.delta * 100:+.1f} pts [{mc.pass_ci[0] * 100:+.1f}, {mc.pass_ci[1] * 100:+.1f}]</td>"
            f"<td>{mc.only_model} / {mc.only_reference}</td><td>{mc.p_value:.2g}</td><td>{score}</td></tr>"
        )
    return (
        '<h3>Models compared on the same cases (paired)</h3>'
        f'<table class="llm-table" id="llm-model-comparison">{head}{"".join(rows)}</table>'
    )


# -- charts ------------------------------------------------------------------------------------
SERIES_COLORS = {
    "pass rate": "#3f9d4a",
    "mean main score": "#2f6fb0",
    "latency p50": "#8e6fd0",
    "latency p95": "#d0842f",
}


def bar_chart(
    chart_id: str, title: str, rows: list[tuple[str, list[tuple[str, float | None, str]]]], vmax: float
) -> str:
    """A horizontal grouped bar chart as inline SVG.

    ``rows``: (label, [(series, value, shown text)]) per group; bars scale to ``vmax``.
    """
    longest = max((min(len(label), 34) for label, _ in rows), default=1)
    label_w, bar_w, right = max(70, min(230, int(6.5 * longest) + 16)), 380, 70
    bar_h, gap, top = 13, 10, 34
    series = list(dict.fromkeys(s for _, bars in rows for s, _, _ in bars))
    height = top + sum(len(b) * bar_h + gap for _, b in rows) + 6
    width = label_w + bar_w + right
    out = [
        f'<svg id="{chart_id}" class="llm-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
        f'<text x="0" y="14" class="llm-chart-title">{esc(title)}</text>',
    ]
    lx = label_w
    for s in series:
        color = SERIES_COLORS.get(s, "#777")
        out.append(f'<rect x="{lx}" y="22" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{lx + 14}" y="31" class="llm-chart-legend">{esc(s)}</text>')
        lx += 16 + 7 * len(s) + 14
    y = top
    scale = bar_w / vmax if vmax > 0 else 0.0
    for label, bars in rows:
        group_h = len(bars) * bar_h
        shown = label if len(label) <= 34 else label[:33] + "…"
        out.append(
            f'<text x="{label_w - 8}" y="{y + group_h / 2 + 4:.1f}" text-anchor="end" class="llm-chart-label">'
            f"<title>{esc(label)}</title>{esc(shown)}</text>"
        )
        for s, value, text in bars:
            w = 0.0 if value is None else max(0.0, min(value, vmax)) * scale
            color = SERIES_COLORS.get(s, "#777")
            out.append(
                f'<rect class="llm-bar" data-series="{esc(s)}" x="{label_w}" y="{y}" width="{w:.1f}" '
                f'height="{bar_h - 2}" fill="{color}"><title>{esc(label)} {esc(s)}: {esc(text)}</title></rect>'
            )
            out.append(
                f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 3}" class="llm-chart-value">{esc(text)}</text>'
            )
            y += bar_h
        y += gap
    out.append(f'<line x1="{label_w}" y1="{top - 4}" x2="{label_w}" y2="{height - 4}" stroke="#999"/>')
    out.append("</svg>")
    return "".join(out)


def _charts(session: Any, groups: dict[tuple[str, str], list[CaseResult]]) -> str:
    aggs = session.aggregates
    if not aggs:
        return ""
    many_tests = len({a.test for a in aggs}) > 1

    def label(a: Any) -> str:
        return f"{_short_test(a.test)} [{a.model}]" if many_tests else a.model

    quality = [
        (
            label(a),
            [
                ("pass rate", a.pass_rate, f"{a.pass_rate:.0%}"),
                ("mean main score", mm := _mean_main(groups.get((a.test, a.model), [])), _num(mm)),
            ],
        )
        for a in aggs
    ]
    lat_max = max([a.latency_p95 or 0.0 for a in aggs] + [a.latency_p50 or 0.0 for a in aggs])
    latency = [
        (
            label(a),
            [
                ("latency p50", a.latency_p50, _num(a.latency_p50, "{:.2f}s")),
                ("latency p95", a.latency_p95, _num(a.latency_p95, "{:.2f}s")),
            ],
        )
        for a in aggs
    ]
    return (
        '<div class="llm-charts">'
        + bar_chart("llm-chart-quality", "Pass rate and mean main score by model", quality, 1.0)
        + bar_chart("llm-chart-latency", "Latency p50 / p95 by model (seconds)", latency, lat_max or 1.0)
        + "</div>"
    )


# -- filters and side by side ------------------------------------------------------------------
def _filters(results: dict[str, CaseResult]) -> str:
    models = list(dict.fromkeys(r.model for r in results.values()))
    tags = sorted({str(t) for r in results.values() for t in r.tags})
    outcomes = [
        o for o in ("passed", "failed", "error", "skipped") if any(r.outcome == o for r in results.values())
    ]

    def select(name: str, label: str, values: list[str]) -> str:
        opts = "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in values)
        return (
            f'<label class="llm-filter">{label} <select id="llm-filter-{name}" data-llm-filter="{name}">'
            f'<option value="">all</option>{opts}</select></label>'
        )

    return (
        '<h3>Filter results</h3><div class="llm-filters" id="llm-filters">'
        + select("model", "model", models)
        + select("tag", "tag", tags)
        + select("outcome", "outcome", outcomes)
        + '<button type="button" id="llm-filter-reset">reset</button>'
        + '<span id="llm-filter-count" class="llm-muted"></span></div>'
    )


def side_by_side(results: dict[str, CaseResult]) -> str:
    """Each case's outputs from every model in columns, per test; empty when one model ran."""
    models = list(dict.fromkeys(r.model for r in results.values()))
    if len(models) < 2:
        return ""
    by_test: dict[str, dict[str, dict[str, CaseResult]]] = defaultdict(dict)
    for r in results.values():
        by_test[r.test].setdefault(r.case_id, {})[r.model] = r
    parts = [f'<h3>Side by side: {" vs ".join(esc(m) for m in models)}</h3><div id="llm-side-by-side">']
    for test, cases in by_test.items():
        head = "<tr><th>case</th>" + "".join(f"<th>{esc(m)}</th>" for m in models) + "</tr>"
        rows = []
        for cid, per_model in cases.items():
            any_rec = next(iter(per_model.values()))
            tags = json.dumps(list(any_rec.tags), ensure_ascii=False)
            outs = json.dumps(sorted({r.outcome for r in per_model.values()}))
            differ = len({(r.outcome, r.output) for r in per_model.values()}) > 1
            cells = []
            for m in models:
                r = per_model.get(m)
                if r is None:
                    cells.append('<td class="llm-muted">not run</td>')
                    continue
                cells.append(
                    f'<td><span class="llm-{esc(r.outcome)}">{esc(r.outcome)}</span> '
                    f"<span class='llm-muted'>score {_num(r.main_value())}</span>{fold(r.output)}</td>"
                )
            rows.append(
                f'<tr class="llm-sbs-row{" llm-differs" if differ else ""}" data-llm-tags="{esc(tags)}" '
                f'data-llm-outcomes="{esc(outs)}"><td><b>{esc(cid)}</b><br><span class="llm-muted">'
                f"{esc(', '.join(map(str, any_rec.tags)))}</span></td>{''.join(cells)}</tr>"
            )
        open_ = " open" if len(cases) <= 40 else ""
        parts.append(
            f'<details class="llm-sbs"{open_}><summary>{esc(_short_test(test))}: {len(cases)} cases</summary>'
            f'<table class="llm-table llm-sbs-table">{head}{"".join(rows)}</table></details>'
        )
    parts.append("</div>")
    return "".join(parts)


__all__ = ["HtmlReport", "bar_chart", "default_run_dir", "esc", "fold", "render_details", "render_summary"]
