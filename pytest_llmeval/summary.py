"""The terminal summary of a run, written from its :class:`RunOutcome`."""

from __future__ import annotations

from typing import Any

from .judge_measure import label_for
from .outcome import RunOutcome
from .redact import safe_terminal
from .repeats import summary_lines as repeats_lines
from .results import Aggregate
from .timing import latency_text


def write_summary(tw: Any, outcome: RunOutcome) -> None:
    """Aggregates per (test, model), paired comparisons, generation counters, the gate, where files went."""
    for line in outcome.estimate_lines:
        tw.write_line(line)
    if not outcome.aggregates:
        return
    tw.write_sep("=", "llmeval summary")
    for a in outcome.aggregates:
        tw.write_line(summary_line(a), bold=True)
        for line in repeats_lines(a):  # with --repeat: pass@k, pass^k, the flakiest cases
            tw.write_line(line, yellow=line.lstrip().startswith("flaky "))
        for k, v in a.scores.items():
            rate = f"  (rate {a.rates[k]:.1%})" if k in a.rates else ""
            tw.write_line(f"    {k:<22} mean {v:.3f}{rate}")
        tw.write_line(
            f"    {latency_text(a)} | tokens {a.prompt_tokens} in / {a.completion_tokens} out | "
            f"cost ${a.cost_spent:.4f} spent, ${a.cost_replayed:.4f} replayed from cache "
            f"({a.cached}/{a.n} cached) | retries {a.retries}"
        )
        if outcome.judge_agreement and any(k.startswith("judge") for k in a.scores):
            label = label_for(outcome.judges, a.test) or outcome.judge_agreement
            tw.write_line(f"    judge agreement with people: {safe_terminal(label, 600)}")
    if outcome.model_comparisons:
        tw.write_sep("-", "models compared on the same cases (paired)")
        for mc in outcome.model_comparisons:
            tw.write_line(mc.line())
            for name in (mc.reference, mc.model):
                note = adapter_training_note(outcome.model_specs.get(name))
                if note:
                    tw.write_line(f"    note: {name}: adapter {safe_terminal(note, 300)}", yellow=True)
    st = outcome.stats
    if st is not None and st.done:
        tw.write_line(
            f"generation: {st.done} completions ({st.cached} from cache), {st.retries} retries, "
            f"first result after {st.first_result_s or 0.0:.1f}s"
        )
    if st is not None and st.near_misses:
        tw.write_line(
            f"cache: {st.near_misses} miss(es) had the same request cached for another model identity, e.g. "
            f"{safe_terminal(st.near_miss_note or '', 300)} (llmeval cache explain NODEID shows an item's key)",
            yellow=True,
        )
    if outcome.verdict is not None:
        outcome.verdict.render(tw)
    elif outcome.baseline_note:
        tw.write_line(f"note: {outcome.baseline_note}")
    if outcome.saved_baseline:
        tw.write_line(f"baseline saved: {outcome.saved_baseline}", green=True)
    elif outcome.save_error:
        tw.write_line(f"baseline NOT saved: {outcome.save_error}", red=True)
    if outcome.run_dir is not None:
        tw.write_line(f"run folder: {outcome.run_dir}")
    if outcome.report_path is not None:
        tw.write_line(f"HTML report: {outcome.report_path}")


def summary_line(a: Aggregate) -> str:
    """``test [model]: n=.. pass rate ..% (.. passed, .. failed, .. errors)``."""
    extra = f", {a.errors} errors" if a.errors else ""
    extra += f", {a.skipped} skipped" if a.skipped else ""
    return (
        f"{safe_terminal(a.test)} [{safe_terminal(a.model)}]: n={a.n} pass rate {a.pass_rate:.1%} "
        f"({a.passed} passed, {a.failed} failed{extra})"
    )


def adapter_training_note(spec: dict[str, Any] | None) -> str | None:
    """The ``training_note`` of a model's ``python -m finetune`` adapter (e.g. a run its time budget stopped)."""
    import json
    from pathlib import Path

    adapter = (spec or {}).get("adapter")
    if not adapter:
        return None
    try:
        meta = json.loads((Path(adapter) / "llmeval_adapter.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    note = meta.get("training_note") if isinstance(meta, dict) else None
    return note if isinstance(note, str) and note else None
