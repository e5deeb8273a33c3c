"""HTML building blocks of the report: escaping, folded texts, one item's details.

Everything that came from a model, a dataset, a case or an error goes through
:func:`esc` (``redact`` then ``html.escape``) before it is put into a page.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from typing import Any

from .redact import redact
from .results import CaseResult

FOLD_CHARS = 400  # longer texts (or more lines) fold into <details>
FOLD_LINES = 8


def esc(value: Any) -> str:
    """Text fit for HTML content and quoted attributes: secrets redacted, markup escaped."""
    return html.escape(redact("" if value is None else str(value)), quote=True)


def _num(v: float | None, fmt: str = "{:.3f}") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


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


def as_text(value: Any) -> str:
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
            f'<div class="llm-msg"><span class="llm-role">{esc(role)}</span>{fold(as_text(content))}</div>'
        )
    return "".join(out)


def scores_table(scores: list[dict[str, Any]]) -> str:
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
    extra = rec.extra or {}
    if rec.retries:
        meta.append(f"{rec.retries} retries")
    if extra.get("time_to_last_token_s") is not None:
        per_token = extra.get("s_per_token")
        meta.append(
            f"{extra['time_to_last_token_s']:.2f} s to last token in a batch of {extra.get('batch_size') or '?'}"
            + (f" ({per_token * 1000:.1f} ms/token)" if per_token is not None else "")
        )
    if extra.get("output_bytes"):
        kept = extra.get("output_limit") or "?"
        meta.append(f"<b>output cut</b> to {kept} bytes of {extra['output_bytes']:,}")
    if rec.cached:
        meta.append("from cache")
    note = (extra.get("cache") or {}).get("note")
    if note:
        meta.append(f"cache miss: {esc(note)}")
    if rec.dataset:
        meta.append(f"dataset {esc(rec.dataset)}")
    parts.append(f'<p class="llm-meta">{" · ".join(meta)}</p>')
    if rec.error:
        parts.append(f'<h4>Error</h4><pre class="llm-text llm-error">{esc(rec.error)}</pre>')
    if extra.get("retry_causes"):
        causes = "".join(f"<li>{esc(c)}</li>" for c in extra["retry_causes"])
        parts.append(f'<details class="llm-retries"><summary>Failed attempts</summary><ol>{causes}</ol>')
        parts.append("</details>")
    parts.append('<div class="llm-grid">')
    parts.append(
        f"<section><h4>Output</h4>{fold(rec.output) if rec.output is not None else '<p class=llm-muted>no output</p>'}</section>"
    )
    expected = "<p class=llm-muted>none</p>" if rec.expected is None else fold(as_text(rec.expected))
    parts.append(f"<section><h4>Expected</h4>{expected}</section>")
    parts.append("</div>")
    parts.append(f"<h4>Scores</h4>{scores_table(rec.scores)}")
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
