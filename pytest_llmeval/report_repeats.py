"""The report's view of repeats: pass@k and pass^k per (test, model), the flaky cases with their samples
side by side, and each repeated item's samples in its details. Every model output goes through ``fold``
(escaped); the page shows nothing of this for a run without repeats."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .report_parts import _num, esc, fold
from .results import USER_PROPERTY, CaseResult

FLAKY_ROWS = 60  # flaky cases shown per (test, model); the rest are counted


def repeats_section(outcome: Any) -> str:
    """pass@k, pass^k, mean pass rate and flaky count per (test, model), then the flaky cases."""
    aggs = [a for a in outcome.aggregates if a.repeats is not None]
    if not aggs:
        return ""
    samples: dict[tuple[str, str, str], list[CaseResult]] = defaultdict(list)
    for r in outcome.records:
        if r.samples > 1:
            samples[(r.test, r.model, r.case_id)].append(r)
    head = (
        "<tr><th>test</th><th>model</th><th>cases</th><th>samples per case</th><th>mean pass rate</th>"
        "<th>pass@k</th><th>pass^k (all k pass)</th><th>flaky cases</th></tr>"
    )
    rows = []
    for a in aggs:
        r = a.repeats
        rows.append(
            f"<tr><td title='{esc(a.test)}'>{esc(a.test.split('::', 1)[-1])}</td><td>{esc(a.model)}</td>"
            f"<td>{r.cases}</td><td>{r.k}</td><td>{r.mean_pass_rate:.1%}</td><td>{r.pass_at_k:.1%}</td>"
            f"<td>{r.pass_all_k:.1%}</td><td>{len(r.flaky)}</td></tr>"
        )
    parts = [
        "<h3>Repeats: samples per case</h3>",
        '<p class="llm-muted">A case is <span class="llm-flaky-badge">flaky</span> when its samples disagree. '
        "pass@k: share of cases where at least one of k samples passes; pass^k: where all k pass.</p>",
        f'<table class="llm-table" id="llm-repeats">{head}{"".join(rows)}</table>',
    ]
    for a in aggs:
        parts.append(_flaky_table(a, samples))
    return "".join(parts)


def _flaky_table(a: Any, samples: dict[tuple[str, str, str], list[CaseResult]]) -> str:
    flaky = a.repeats.flaky
    if not flaky:
        return ""
    width = max(f["samples"] for f in flaky)
    head = (
        "<tr><th>case</th><th>passed</th>" + "".join(f"<th>sample {j}</th>" for j in range(width)) + "</tr>"
    )
    rows = []
    for f in flaky[:FLAKY_ROWS]:
        recs = sorted(samples.get((a.test, a.model, f["case_id"]), []), key=lambda r: r.sample)
        spread = "" if f["spread"] is None else f"<br><span class='llm-muted'>spread {f['spread']:.2f}</span>"
        rows.append(
            f'<tr class="llm-flaky"><td><b>{esc(f["case_id"])}</b> <span class="llm-flaky-badge">flaky</span></td>'
            f"<td>{f['outcomes'].count('passed')}/{f['samples']} ({f['pass_fraction']:.2f}){spread}</td>"
            + "".join(_sample_cell(r) for r in recs)
            + "</tr>"
        )
    more = len(flaky) - FLAKY_ROWS
    tail = (
        f'<p class="llm-muted">... and {more} more flaky cases (llmeval flaky lists them)</p>'
        if more > 0
        else ""
    )
    return (
        f'<details class="llm-sbs" open><summary>{esc(a.test.split("::", 1)[-1])} [{esc(a.model)}]: '
        f"{len(flaky)} flaky of {a.repeats.cases} cases, samples side by side</summary>"
        f'<table class="llm-table llm-samples" id="llm-flaky-{esc(a.model)}">{head}{"".join(rows)}</table>'
        f"{tail}</details>"
    )


def _sample_cell(r: CaseResult) -> str:
    error = f"<br><span class='llm-muted'>{esc(r.error[:300])}</span>" if r.error else ""
    return (
        f'<td><span class="llm-{esc(r.outcome)}">{esc(r.outcome)}</span> '
        f"<span class='llm-muted'>score {_num(r.main_value())}</span>{fold(r.output)}{error}</td>"
    )


def item_samples(report: Any, local: dict[str, list[CaseResult]]) -> str:
    """An item's samples side by side (for its details), or "" when it has one."""
    recs = local.get(report.nodeid)
    if recs is None:  # a worker's records: parse them from the report
        recs = []
        for key, value in getattr(report, "user_properties", None) or ():
            if key == USER_PROPERTY:
                try:
                    recs.append(CaseResult.from_json(value))
                except (ValueError, TypeError):
                    continue
        recs = list({r.sample: r for r in recs}.values())  # a rerun's records replace the earlier ones
    if len(recs) <= 1:
        return ""
    recs = sorted(recs, key=lambda r: r.sample)
    passed = sum(r.outcome == "passed" for r in recs)
    badge = ' <span class="llm-flaky-badge">flaky</span>' if 0 < passed < len(recs) else ""
    head = "".join(f"<th>sample {r.sample}</th>" for r in recs)
    return (
        f"<h4>Samples: {passed} of {len(recs)} passed{badge}</h4>"
        f'<table class="llm-table llm-samples"><tr>{head}</tr><tr>{"".join(_sample_cell(r) for r in recs)}</tr></table>'
    )
