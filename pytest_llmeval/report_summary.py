"""The report's summary block, built from the run's :class:`RunOutcome`: aggregates, gate,
paired comparisons, judge agreement, charts, filters and outputs side by side."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from .outcome import RunOutcome
from .report_parts import _num, esc, fold
from .report_repeats import repeats_section
from .results import CaseResult

_ASSETS = Path(__file__).parent


def _groups(results: dict[str, CaseResult]) -> dict[tuple[str, str], list[CaseResult]]:
    g: dict[tuple[str, str], list[CaseResult]] = defaultdict(list)
    for r in results.values():
        g[(r.test, r.model)].append(r)
    return g


def _mean_main(rs: list[CaseResult]) -> float | None:
    vals = [v for r in rs if r.outcome != "skipped" and (v := r.main_value()) is not None]
    return sum(vals) / len(vals) if vals else None


def _main_scale(rs: list[CaseResult]) -> tuple[float, float]:
    """The range the main score of a group lives on: its declared scale (the judge's 1-5), else 0..1,
    widened to the values seen when a custom scorer goes beyond it."""
    vals = []
    for r in rs:
        for s in r.scores:
            if s.get("name") == (r.main_score or (r.scores[-1].get("name") if r.scores else None)):
                if s.get("scale"):
                    lo, hi = s["scale"]
                    return float(lo), float(hi)
                if s.get("value") is not None:
                    vals.append(float(s["value"]))
    return min([0.0, *vals]), max([1.0, *vals])


def _latency_cell(a: Any) -> str:
    """Request latency for servers; time to the last token for in-process batches, named so."""
    if a.latency_p50 is not None or getattr(a, "time_to_last_token_p50", None) is None:
        return f"{_num(a.latency_p50, '{:.2f}s')} / {_num(a.latency_p95, '{:.2f}s')}"
    per_token = "" if a.s_per_token_p50 is None else f", {a.s_per_token_p50 * 1000:.1f} ms/token"
    return (
        f"<span title='in-process batches: time from the batch start to the item&#39;s last token'>"
        f"to last token {_num(a.time_to_last_token_p50, '{:.2f}s')} / {_num(a.time_to_last_token_p95, '{:.2f}s')}"
        f"{per_token}</span>"
    )


def _short_test(test: str) -> str:
    return test.split("::", 1)[-1]


def render_summary(outcome: RunOutcome) -> str:
    """The block above the results table: aggregates, gate, judge agreement, charts, filters, side by side."""
    results = outcome.results
    groups = _groups(results)
    parts = [_style(), '<section id="llmeval-summary" class="llm-summary">', "<h2>LLM evals</h2>"]
    parts.append(_verdict_badge(outcome))
    parts.append(_aggregates_table(outcome, groups))
    parts.append(repeats_section(outcome))  # with --repeat: pass@k, pass^k, flaky cases' samples
    parts.append(_gate_section(outcome))
    parts.append(_comparisons_section(outcome))
    agreement = outcome.judge_agreement
    if agreement:
        parts.append(
            f'<p class="llm-judge-agreement">Judge agreement with people: <b>{esc(agreement)}</b></p>'
        )
    parts.append(_charts(outcome, groups))
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


def _verdict_badge(outcome: RunOutcome) -> str:
    v = outcome.verdict
    if v is None:
        note = outcome.baseline_note or "no baseline given; not gated"
        return f'<p class="llm-gate"><span class="llm-badge llm-badge-none">not gated</span> {esc(note)}</p>'
    cls, word = ("llm-badge-pass", "gate PASSED") if v.passed else ("llm-badge-fail", "gate FAILED")
    mode = esc(getattr(v, "mode", ""))
    return f'<p class="llm-gate"><span class="llm-badge {cls}">{word}</span> mode {mode}</p>'


def _aggregates_table(outcome: RunOutcome, groups: dict[tuple[str, str], list[CaseResult]]) -> str:
    head = (
        "<tr><th>test</th><th>model</th><th>n</th><th>pass rate</th><th>mean main score</th>"
        "<th>scores (mean)</th><th>latency p50 / p95</th><th>tokens in / out</th><th>cost</th>"
        "<th>cached</th><th>errors</th><th>skipped</th></tr>"
    )
    rows = []
    for a in outcome.aggregates:
        mm = _mean_main(groups.get((a.test, a.model), []))
        scores = ", ".join(
            f"{esc(k)} {v:.3f}" + (f" (rate {a.rates[k]:.0%})" if k in a.rates else "")
            for k, v in a.scores.items()
        )
        rows.append(
            f"<tr><td title='{esc(a.test)}'>{esc(_short_test(a.test))}</td><td>{esc(a.model)}</td><td>{a.n}</td>"
            f"<td>{a.pass_rate:.1%} ({a.passed}/{a.n})</td><td>{_num(mm)}</td><td>{scores}</td>"
            f"<td>{_latency_cell(a)}</td>"
            f"<td>{a.prompt_tokens} / {a.completion_tokens}</td>"
            f"<td>${a.cost:.4f} (spent ${a.cost_spent:.4f})</td><td>{a.cached}</td>"
            f"<td>{a.errors}</td><td>{a.skipped}</td></tr>"
        )
    return f'<h3>Aggregates per test and model</h3><table class="llm-table" id="llm-aggregates">{head}{"".join(rows)}</table>'


def _gate_section(outcome: RunOutcome) -> str:
    v = outcome.verdict
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


def _comparisons_section(outcome: RunOutcome) -> str:
    comps = outcome.model_comparisons
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
        "<h3>Models compared on the same cases (paired)</h3>"
        f'<table class="llm-table" id="llm-model-comparison">{head}{"".join(rows)}</table>'
    )


# -- charts ------------------------------------------------------------------------------------
SERIES_COLORS = {
    "pass rate": "#3f9d4a",
    "mean main score": "#2f6fb0",
    "latency p50": "#8e6fd0",
    "latency p95": "#d0842f",
    "to last token p50": "#8e6fd0",
    "to last token p95": "#d0842f",
}
Bar = tuple  # (series, value, shown text) or (series, value, shown text, (low, high)): its own scale


def bar_chart(chart_id: str, title: str, rows: list[tuple[str, list[Bar]]], vmax: float) -> str:
    """A horizontal grouped bar chart as inline SVG.

    ``rows``: (label, [(series, value, shown text)]) per group; bars scale to ``vmax``, or to
    their own (low, high) when a bar carries one as a fourth element (a judge's 1-5: 1 is empty).
    """
    longest = max((min(len(label), 34) for label, _ in rows), default=1)
    label_w, bar_w, right = max(70, min(230, int(6.5 * longest) + 16)), 380, 70
    bar_h, gap, top = 13, 10, 34
    series = list(dict.fromkeys(b[0] for _, bars in rows for b in bars))
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
        for s, value, text, *own in bars:
            if own:
                lo, hi = own[0]
                frac = 0.0 if value is None or hi <= lo else (value - lo) / (hi - lo)
                w = max(0.0, min(frac, 1.0)) * bar_w
            else:
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


def _charts(outcome: RunOutcome, groups: dict[tuple[str, str], list[CaseResult]]) -> str:
    aggs = outcome.aggregates
    if not aggs:
        return ""
    many_tests = len({a.test for a in aggs}) > 1

    def label(a: Any) -> str:
        return f"{_short_test(a.test)} [{a.model}]" if many_tests else a.model

    quality = []
    for a in aggs:
        rs = groups.get((a.test, a.model), [])
        mm, (lo, hi) = _mean_main(rs), _main_scale(rs)
        shown = _num(mm) if (lo, hi) == (0.0, 1.0) else f"{_num(mm)} (scale {lo:g}-{hi:g})"
        quality.append(
            (
                label(a),
                [("pass rate", a.pass_rate, f"{a.pass_rate:.0%}"), ("mean main score", mm, shown, (lo, hi))],
            )
        )
    # Request latency (servers) and time to the last token (in-process batches) are different
    # figures: each gets its own chart, and a model appears in the one that measures it.
    batched = [a for a in aggs if a.latency_p50 is None and getattr(a, "time_to_last_token_p50", None)]
    timed = [a for a in aggs if a not in batched]
    charts = [bar_chart("llm-chart-quality", "Pass rate and mean main score by model", quality, 1.0)]
    latency_title = "Request latency p50 / p95 by model (seconds)"
    ttlt_title = "In-process batches: time to the item's last token, p50 / p95 (seconds)"
    ttlt = ("time_to_last_token_p50", "time_to_last_token_p95")
    for chart_id, title, group, (f50, f95), prefix in (
        ("llm-chart-latency", latency_title, timed, ("latency_p50", "latency_p95"), "latency"),
        ("llm-chart-ttlt", ttlt_title, batched, ttlt, "to last token"),
    ):
        if not group or (prefix == "latency" and batched and all(a.latency_p50 is None for a in group)):
            continue
        top = max([getattr(a, f95) or 0.0 for a in group] + [getattr(a, f50) or 0.0 for a in group])
        rows = [
            (
                label(a),
                [
                    (f"{prefix} p50", getattr(a, f50), _num(getattr(a, f50), "{:.2f}s")),
                    (f"{prefix} p95", getattr(a, f95), _num(getattr(a, f95), "{:.2f}s")),
                ],
            )
            for a in group
        ]
        charts.append(bar_chart(chart_id, title, rows, top or 1.0))
    return '<div class="llm-charts">' + "".join(charts) + "</div>"


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


# A row whose models differ (outcome or output): the orange left border, explained by the legend.
DIFFERS = ' llm-differs" title="the models differ on this case: another outcome or another output'


def side_by_side(results: dict[str, CaseResult]) -> str:
    """Each case's outputs from every model in columns, per test; empty when one model ran."""
    models = list(dict.fromkeys(r.model for r in results.values()))
    if len(models) < 2:
        return ""
    by_test: dict[str, dict[str, dict[str, CaseResult]]] = defaultdict(dict)
    for r in results.values():
        by_test[r.test].setdefault(r.case_id, {})[r.model] = r
    parts = [
        f"<h3>Side by side: {' vs '.join(esc(m) for m in models)}</h3>"
        '<p class="llm-legend"><span class="llm-swatch-differs"></span> an orange left border marks a case '
        "whose models differ: another outcome or another output</p>"
        '<div id="llm-side-by-side">'
    ]
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
                f'<tr class="llm-sbs-row{DIFFERS if differ else ""}" data-llm-tags="{esc(tags)}" '
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
