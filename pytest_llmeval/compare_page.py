"""The run-vs-run review page that ``llmeval compare`` writes beside its terminal table.

One self-contained HTML file (inline CSS and script, nothing fetched, works from
``file://``): the two runs, then per (test, model) the metrics with deltas, 95%
intervals and McNemar p-values (:mod:`pytest_llmeval.compare`), then each case
whose outcome changed with both runs' outputs side by side and every scorer's
value and explanation, filterable by change (pass → fail, fail → pass, other).

Everything from a run goes through :func:`pytest_llmeval.report.esc` (secrets
redacted, markup escaped). The script is a static file that reads the filter
values from escaped ``data-`` attributes; a Content-Security-Policy admits that
script alone (by its hash), no other script, event handler, image or request.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .compare import (
    CHANGE_LABELS,
    FAIL_TO_PASS,
    PASS_TO_FAIL,
    MetricDelta,
    PairComparison,
    fmt_delta,
    fmt_stats,
    fmt_value,
    results_by_case,
)
from .report_parts import as_text, esc, fold, scores_table

_ASSETS = Path(__file__).parent


def _asset(name: str) -> str:
    return (_ASSETS / name).read_text(encoding="utf-8")


def _csp(script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return (
        "default-src 'none'; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'; img-src 'none'; form-action 'none'; base-uri 'none'"
    )


def _run_rows(base: dict[str, Any], cur: dict[str, Any]) -> str:
    rows = []
    for role, run in (("baseline", base["run"]), ("current", cur["run"])):
        models = ", ".join(map(str, run.get("models") or [])) or "–"
        state = "complete" if run.get("complete") else "incomplete"
        commit = str(run.get("git_commit") or "")[:12] or "–"
        rows.append(
            f"<tr><th>{role}</th><td><b>{esc(run['id'])}</b></td><td>{esc(run.get('started'))}</td>"
            f"<td>{esc(models)}</td><td>{esc(commit)}</td><td>{state}</td>"
            f"<td><code>{esc(run.get('command') or '')}</code></td></tr>"
        )
    head = "<tr><th></th><th>run</th><th>started</th><th>models</th><th>commit</th><th></th><th>command</th></tr>"
    return f'<table class="llm-table" id="cmp-runs">{head}{"".join(rows)}</table>'


def _counts(pc: PairComparison) -> dict[str, int]:
    out = dict.fromkeys(CHANGE_LABELS, 0)
    for ch in pc.changed:
        out[ch["change"]] += 1
    return out


def _overview(pairs: Sequence[PairComparison]) -> str:
    head = (
        "<tr><th>test</th><th>model</th><th>shared cases</th><th>pass rate</th><th>delta</th>"
        "<th>95% CI / p-value</th>" + "".join(f"<th>{esc(v)}</th>" for v in CHANGE_LABELS.values()) + "</tr>"
    )
    rows = []
    for pc in pairs:
        pr = pc.metrics[0]
        counts = _counts(pc)
        rows.append(
            f"<tr><td>{esc(pc.test)}</td><td>{esc(pc.model)}</td><td>{pc.shared}</td>"
            f"<td>{fmt_value(pr.baseline)} → {fmt_value(pr.current)}</td>{_delta_cell(pr)}"
            f"<td>{esc(fmt_stats(pr))}</td>"
            + "".join(f"<td>{counts[k]}</td>" for k in CHANGE_LABELS)
            + "</tr>"
        )
    return f'<table class="llm-table" id="cmp-overview">{head}{"".join(rows)}</table>'


def _delta_cell(m: MetricDelta) -> str:
    cls = ""
    if m.significant() and m.better() is not None:
        cls = ' class="cmp-better"' if m.better() else ' class="cmp-worse"'
    return f"<td{cls}>{fmt_delta(m.delta)}</td>"


def _metrics_table(pc: PairComparison) -> str:
    head = "<tr><th>metric</th><th>baseline</th><th>current</th><th>delta</th><th>95% CI / p-value</th></tr>"
    rows = [
        f"<tr><td>{esc(m.metric)}</td><td>{fmt_value(m.baseline)}</td><td>{fmt_value(m.current)}</td>"
        f"{_delta_cell(m)}<td>{esc(fmt_stats(m))}</td></tr>"
        for m in pc.metrics
    ]
    return f'<table class="llm-table cmp-metrics">{head}{"".join(rows)}</table>'


def _side(r: dict[str, Any]) -> str:
    """One run's half of a changed case: outcome, output, error, scores with explanations."""
    outcome = str(r.get("outcome"))
    main = r.get("main_value")
    meta = f'<span class="llm-{esc(outcome)}">{esc(outcome)}</span>'
    if main is not None:
        meta += f' <span class="llm-muted">{esc(r.get("main_score") or "main score")} {main:.3f}</span>'
    if r.get("latency_s") is not None:
        meta += f' <span class="llm-muted">· {r["latency_s"]:.2f} s</span>'
    if r.get("cached"):
        meta += ' <span class="llm-muted">· from cache</span>'
    parts = [f'<div class="cmp-side">{meta}', "<h4>Output</h4>"]
    if r.get("output") is None:
        parts.append('<p class="llm-muted">no output</p>')
    else:
        parts.append(fold(r["output"]))
        if r.get("output_truncated"):
            parts.append('<p class="llm-muted">(stored truncated)</p>')
    if r.get("error"):
        parts.append(f'<h4>Error</h4><pre class="llm-text llm-error">{esc(r["error"])}</pre>')
    parts.append(f"<h4>Scores</h4>{scores_table(r.get('scores') or [])}</div>")
    return "".join(parts)


def _case_rows(i: int, pc: PairComparison, b_rows: dict[str, Any], c_rows: dict[str, Any]) -> str:
    rows = []
    for ch in pc.changed:
        b, c = b_rows[ch["case_id"]], c_rows[ch["case_id"]]
        tags = ", ".join(map(str, c.get("tags") or []))
        expected = c.get("expected")
        exp = "" if expected is None else f"<h4>Expected</h4>{fold(as_text(expected))}"
        rows.append(
            f'<tr class="cmp-case" data-change="{esc(ch["change"])}" data-pair="{i}" '
            f'data-case="{esc(ch["case_id"])}"><td><b>{esc(ch["case_id"])}</b><br>'
            f'<span class="cmp-change">{esc(CHANGE_LABELS[ch["change"]])}</span><br>'
            f'<span class="llm-muted">{esc(tags)}</span>{exp}</td>'
            f"<td>{_side(b)}</td><td>{_side(c)}</td></tr>"
        )
    return "".join(rows)


def _pair_section(
    i: int, pc: PairComparison, b_rows: dict[str, Any], c_rows: dict[str, Any], labels: tuple[str, str]
) -> str:
    extra = ""
    if pc.added or pc.removed:
        extra = f"; {len(pc.added)} case(s) only in the current run, {len(pc.removed)} only in the baseline"
    parts = [
        f'<section class="cmp-pair" data-pair="{i}">',
        f"<h2>{esc(pc.test)} [{esc(pc.model)}]</h2>",
        f'<p class="llm-muted">{pc.shared} shared cases{esc(extra)}</p>',
        _metrics_table(pc),
        f"<h3>Changed cases ({len(pc.changed)})</h3>",
    ]
    if not pc.changed:
        parts.append('<p class="llm-muted cmp-no-change">no case changed outcome</p>')
    else:
        head = (
            f"<thead><tr><th>case</th><th>baseline {esc(labels[0])}</th>"
            f"<th>current {esc(labels[1])}</th></tr></thead>"
        )
        parts.append(
            f'<table class="llm-table cmp-cases">{head}<tbody>{_case_rows(i, pc, b_rows, c_rows)}</tbody></table>'
            '<p class="llm-muted cmp-none-match cmp-hidden">no changed case matches the filter</p>'
        )
    parts.append("</section>")
    return "".join(parts)


def _filters(pairs: Sequence[PairComparison]) -> str:
    changes = "".join(f'<option value="{esc(k)}">{esc(v)}</option>' for k, v in CHANGE_LABELS.items())
    pair_opts = "".join(
        f'<option value="{i}">{esc(pc.test)} [{esc(pc.model)}]</option>' for i, pc in enumerate(pairs)
    )
    return (
        '<div class="llm-filters" id="cmp-filters">'
        '<label>change <select id="cmp-filter-change"><option value="">all changed</option>'
        f"{changes}</select></label>"
        f'<label>test / model <select id="cmp-filter-pair"><option value="">all</option>{pair_opts}</select></label>'
        '<button type="button" id="cmp-filter-reset">reset</button>'
        '<span id="cmp-count" class="llm-muted"></span></div>'
        '<p class="cmp-legend llm-muted"><span class="cmp-key-pf">pass → fail</span>'
        '<span class="cmp-key-fp">fail → pass</span><span class="cmp-key-other">other change</span></p>'
    )


def render_page(
    base: dict[str, Any], cur: dict[str, Any], pairs: Sequence[PairComparison], notes: Sequence[str]
) -> str:
    """The whole page as one HTML document."""
    script = _asset("compare_page.js")
    b_all, c_all = results_by_case(base), results_by_case(cur)
    labels = (str(base["run"]["id"]), str(cur["run"]["id"]))
    n_pf = sum(1 for pc in pairs for ch in pc.changed if ch["change"] == PASS_TO_FAIL)
    n_fp = sum(1 for pc in pairs for ch in pc.changed if ch["change"] == FAIL_TO_PASS)
    title = f"Run comparison: {labels[1]} vs {labels[0]}"
    body = [
        f"<h1>{esc(title)}</h1>",
        _run_rows(base, cur),
        f"<p>{n_pf} case(s) went from pass to fail and {n_fp} from fail to pass, over "
        f"{len(pairs)} (test, model) pair(s) that both runs have.</p>",
    ]
    body += [f'<p class="llm-note">note: {esc(n)}</p>' for n in notes]
    if pairs:
        body += ["<h2>Overview</h2>", _overview(pairs), "<h2>Filter changed cases</h2>", _filters(pairs)]
    body += [
        _pair_section(i, pc, b_all[(pc.test, pc.model)], c_all[(pc.test, pc.model)], labels)
        for i, pc in enumerate(pairs)
    ]
    if not pairs:  # the script's elements must exist even when there is nothing to filter
        body.append('<div class="cmp-hidden">' + _filters(pairs) + "</div>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(_csp(script), quote=True)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title>"
        f"<style>{_asset('report.css')}\n{_asset('compare_page.css')}</style></head>"
        f'<body class="llm-summary">{"".join(body)}<script>{script}</script></body></html>\n'
    )


def default_page_path(run: dict[str, Any], baseline_id: str, fallback_dir: Path) -> Path:
    """``<current run folder>/compare-<baseline id>.html``; in ``fallback_dir`` when that folder is gone."""
    name = f"compare-{_safe_name(baseline_id)}.html"
    run_dir = run.get("run_dir")
    if run_dir and Path(run_dir).is_dir():
        return Path(run_dir) / name
    return fallback_dir / f"compare-{_safe_name(str(run['id']))}-vs-{_safe_name(baseline_id)}.html"


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:120] or "run"


def write_page(path: Path, text: str) -> Path:
    """Write the page (creating its folder); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
