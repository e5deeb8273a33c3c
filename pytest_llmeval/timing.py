"""What a run's latency figures mean, by how the model was fed.

A server answers each request on its own: an item's ``latency_s`` is its
request's latency, and ``latency_p50`` / ``latency_p95`` summarise them.

An in-process model (``type: hf``) generates a batch at once, so an item has
no latency of its own. What can be measured honestly per item is kept in its
record's ``extra``: ``time_to_last_token_s`` (from the start of its batch to
its own last token), ``s_per_token`` (that time over its output tokens) and
``batch_size``. Such items leave ``latency_s`` empty, and their (test, model)
rows show and gate ``time_to_last_token_p50`` / ``time_to_last_token_p95`` and
``s_per_token_p50`` instead of ``latency_p*``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Metrics of in-process batches, all lower-is-better.
BATCH_METRICS = ("time_to_last_token_p50", "time_to_last_token_p95", "s_per_token_p50")


def batch_timing(records: Iterable[Any]) -> dict[str, float | None]:
    """The batch metrics of a (test, model) group's records (None where no item measured them)."""
    from .results import percentile

    ttlt, per_token = [], []
    for r in records:
        if r.outcome == "error":
            continue
        extra = r.extra or {}
        if extra.get("time_to_last_token_s") is not None:
            ttlt.append(float(extra["time_to_last_token_s"]))
        if extra.get("s_per_token") is not None:
            per_token.append(float(extra["s_per_token"]))
    return {
        "time_to_last_token_p50": percentile(ttlt, 50),
        "time_to_last_token_p95": percentile(ttlt, 95),
        "s_per_token_p50": percentile(per_token, 50),
    }


def latency_text(a: Any) -> str:
    """The timing part of a summary line: request latency, or batch timing, or n/a."""
    parts = []
    if a.latency_p50 is not None:
        parts.append(f"latency p50 {a.latency_p50:.2f}s p95 {a.latency_p95:.2f}s")
    ttlt50 = getattr(a, "time_to_last_token_p50", None)
    if ttlt50 is not None:
        text = f"time to last token (batched) p50 {ttlt50:.2f}s p95 {a.time_to_last_token_p95:.2f}s"
        if a.s_per_token_p50 is not None:
            text += f", {a.s_per_token_p50 * 1000:.1f} ms/token"
        parts.append(text)
    return " | ".join(parts) or "latency n/a"
