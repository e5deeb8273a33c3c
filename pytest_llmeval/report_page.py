"""A standalone HTML report for a run that pytest-html did not render: a merged run (``llmeval merge``).

The blocks are the live report's own: :func:`report_summary.render_summary` (aggregates, gate,
paired comparisons, charts, filters, side by side), :func:`report.row_cells` and
:func:`report_parts.render_details` per item. Every value from a model, a dataset or a case is
escaped by those functions; the only script is the summary's static ``report.js``, allowed by a
Content-Security-Policy hash.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from .compare_page import _csp
from .outcome import RunOutcome
from .report import _COLUMNS, row_cells
from .report_parts import esc, render_details
from .report_summary import _ASSETS, render_summary

REPORT_NAME = "report.html"


def render_page(outcome: RunOutcome, title: str, about: Sequence[str] = ()) -> str:
    """The whole page: a title, ``about`` lines (escaped here), the summary, then a row per item."""
    head = "<th>Test</th>" + "".join(
        f'<th data-column-type="{key}">{label}</th>' for key, label, _ in _COLUMNS
    )
    bodies = []
    for rec in outcome.records:
        bodies.append(
            '<tbody class="results-table-row">'
            f'<tr><td class="col-testId">{esc(rec.nodeid)}</td>{"".join(row_cells(rec))}</tr>'
            f'<tr class="llm-extra"><td colspan="{len(_COLUMNS) + 1}">{render_details(rec)}</td></tr>'
            "</tbody>"
        )
    script = (_ASSETS / "report.js").read_text(encoding="utf-8")
    body = [f"<h1>{esc(title)}</h1>"]
    body += [f'<p class="llm-note">{esc(line)}</p>' for line in about]
    body.append(render_summary(outcome))
    body.append(
        f"<h2>Results ({len(outcome.records)} items)</h2>"
        f'<table class="llm-table" id="results-table"><thead><tr>{head}</tr></thead>{"".join(bodies)}</table>'
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(_csp(script), quote=True)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
