"""A stored run as CSV, JSON or Prometheus text (node_exporter textfile / Pushgateway).

Every function takes the dict :func:`pytest_llmeval.store.load_run` returns,
whose text was redacted when it was stored.

Prometheus series carry the labels ``model`` and ``task`` (the test name) and
never a case id, so cardinality stays that of the suite. Names use base units:

    llmeval_pass_ratio{model,task}                       share of ran items that passed
    llmeval_items_total{model,task,outcome}              items by outcome
    llmeval_score_ratio{model,task,score}                mean of a score (scorers give 0..1)
    llmeval_score_pass_ratio{model,task,score}           share passing, for rate-aggregated scores
    llmeval_latency_seconds{model,task,quantile}         0.5 and 0.95 quantiles of call latency
    llmeval_tokens_total{model,task,kind}                prompt / completion tokens
    llmeval_cost_usd_total{model,task}                   cost as if every call were made
    llmeval_cached_items{model,task}, llmeval_retries_total{model,task}
    llmeval_run_complete, llmeval_gate_passed, llmeval_run_timestamp_seconds, llmeval_run_duration_seconds

The ``*_total`` series describe the exported run alone: each export replaces the last.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .results import Aggregate

RESULT_FIELDS = [
    "run_id",
    "nodeid",
    "test",
    "model",
    "case_id",
    "tags",
    "outcome",
    "passed",
    "main_score",
    "main_value",
    "latency_s",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "cached",
    "retries",
    "finish_reason",
    "error",
    "output",
    "output_truncated",
]
JSON_FORMAT = "pytest-llmeval-export"
JSON_VERSION = 1
# Aggregate metrics that count things (items, tokens, retries): stored as REAL, exported as integers.
COUNT_METRICS = frozenset(f.name for f in dataclasses.fields(Aggregate) if f.type in ("int", int))


def score_names(run: dict[str, Any]) -> list[str]:
    """Every score name recorded in the run, in first-seen order."""
    names: dict[str, None] = {}
    for r in run["results"]:
        for s in r.get("scores") or []:
            names.setdefault(str(s.get("name")), None)
    return list(names)


def write_results_csv(run: dict[str, Any], out: IO[str]) -> None:
    """One row per result; each score gets a ``score.NAME`` column."""
    scores = score_names(run)
    w = csv.writer(out)
    w.writerow(RESULT_FIELDS + [f"score.{n}" for n in scores])
    for r in run["results"]:
        row = []
        for f in RESULT_FIELDS:
            v = r.get(f)
            if f == "tags":
                v = ";".join(v or [])
            row.append("" if v is None else v)
        by_name = {str(s.get("name")): s.get("value") for s in r.get("scores") or []}
        row += ["" if by_name.get(n) is None else by_name[n] for n in scores]
        w.writerow(row)


def aggregate_metric_names(run: dict[str, Any]) -> list[str]:
    names: dict[str, None] = {}
    for a in run["aggregates"]:
        for m in a["metrics"]:
            names.setdefault(m, None)
    return list(names)


def metric_value(name: str, value: float | None) -> float | int | None:
    """An aggregate metric as exported: counts as integers (``5``, not ``5.0``), the rest as stored."""
    if value is not None and name in COUNT_METRICS and float(value).is_integer():
        return int(value)
    return value


def typed_metrics(metrics: dict[str, float | None]) -> dict[str, float | int | None]:
    """An aggregate's metrics with :func:`metric_value` applied to each."""
    return {name: metric_value(name, v) for name, v in metrics.items()}


def write_aggregates_csv(run: dict[str, Any], out: IO[str]) -> None:
    """One row per (test, model); one column per metric."""
    metrics = aggregate_metric_names(run)
    w = csv.writer(out)
    w.writerow(["run_id", "test", "model", *metrics])
    for a in run["aggregates"]:
        values = typed_metrics(a["metrics"])
        w.writerow(
            [
                run["run"]["id"],
                a["test"],
                a["model"],
                *("" if values.get(m) is None else values[m] for m in metrics),
            ]
        )


def aggregates_path(path: Path) -> Path:
    """Where the aggregates CSV goes beside a results CSV: ``x.csv`` -> ``x.aggregates.csv``."""
    return path.with_name(f"{path.stem}.aggregates{path.suffix or '.csv'}")


def write_csv(run: dict[str, Any], path: Path) -> list[Path]:
    """The results CSV at ``path`` and the aggregates CSV beside it; returns both paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    agg = aggregates_path(path)
    with open(path, "w", encoding="utf-8", newline="") as f:
        write_results_csv(run, f)
    with open(agg, "w", encoding="utf-8", newline="") as f:
        write_aggregates_csv(run, f)
    return [path, agg]


def to_json(run: dict[str, Any]) -> dict[str, Any]:
    """The whole run as one JSON document."""
    return {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "run": run["run"],
        "aggregates": [{**a, "metrics": typed_metrics(a["metrics"])} for a in run["aggregates"]],
        "aggregates_computed": run.get("aggregates_computed", False),
        "results": run["results"],
    }


def json_text(run: dict[str, Any]) -> str:
    return json.dumps(to_json(run), indent=2, ensure_ascii=False, default=str) + "\n"


# -- Prometheus ---------------------------------------------------------------
class _RunCollector:
    """A prometheus_client collector over one stored run."""

    def __init__(self, run: dict[str, Any]) -> None:
        self.run = run

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        base = ["model", "task"]
        pass_ratio = GaugeMetricFamily("llmeval_pass_ratio", "Share of ran items that passed.", labels=base)
        items = CounterMetricFamily(
            "llmeval_items", "Items of the run by outcome.", labels=[*base, "outcome"]
        )
        score = GaugeMetricFamily(
            "llmeval_score_ratio", "Mean value of a score (0..1).", labels=[*base, "score"]
        )
        score_rate = GaugeMetricFamily(
            "llmeval_score_pass_ratio",
            "Share of items passing a rate-aggregated score.",
            labels=[*base, "score"],
        )
        latency = GaugeMetricFamily(
            "llmeval_latency_seconds", "Model call latency quantiles.", labels=[*base, "quantile"]
        )
        tokens = CounterMetricFamily("llmeval_tokens", "Tokens of the run's calls.", labels=[*base, "kind"])
        cost = CounterMetricFamily(
            "llmeval_cost_usd", "Cost of the run's calls in US dollars, cached ones included.", labels=base
        )
        cached = GaugeMetricFamily(
            "llmeval_cached_items", "Items answered from the response cache.", labels=base
        )
        retries = CounterMetricFamily("llmeval_retries", "Retried model calls.", labels=base)
        for a in self.run["aggregates"]:
            m = a["metrics"]
            lv = [str(a["model"]), str(a["test"])]
            if m.get("pass_rate") is not None:
                pass_ratio.add_metric(lv, m["pass_rate"])
            for outcome, key in (
                ("passed", "passed"),
                ("failed", "failed"),
                ("error", "errors"),
                ("skipped", "skipped"),
            ):
                items.add_metric([*lv, outcome], m.get(key) or 0.0)
            for name, value in m.items():
                if value is None:
                    continue
                if name.startswith("score:"):
                    score.add_metric([*lv, name[6:]], value)
                elif name.startswith("rate:"):
                    score_rate.add_metric([*lv, name[5:]], value)
            for q, key in (("0.5", "latency_p50"), ("0.95", "latency_p95")):
                if m.get(key) is not None:
                    latency.add_metric([*lv, q], m[key])
            tokens.add_metric([*lv, "prompt"], m.get("prompt_tokens") or 0.0)
            tokens.add_metric([*lv, "completion"], m.get("completion_tokens") or 0.0)
            cost.add_metric(lv, m.get("cost") or 0.0)
            cached.add_metric(lv, m.get("cached") or 0.0)
            retries.add_metric(lv, m.get("retries") or 0.0)
        families = (pass_ratio, items, score, score_rate, latency, tokens, cost, cached, retries)
        yield from (f for f in families if f.samples)

        info = self.run["run"]
        yield GaugeMetricFamily(
            "llmeval_run_complete",
            "1 if the run finished, 0 if it stopped early.",
            value=float(info.get("complete") or 0),
        )
        if info.get("gate_passed") is not None:
            yield GaugeMetricFamily(
                "llmeval_gate_passed",
                "1 if the quality gate passed, 0 if it failed.",
                value=float(info["gate_passed"]),
            )
        ts = _epoch(info.get("ended") or info.get("started"))
        if ts is not None:
            yield GaugeMetricFamily(
                "llmeval_run_timestamp_seconds", "When the run ended (or started).", value=ts
            )
        if info.get("duration_s") is not None:
            yield GaugeMetricFamily(
                "llmeval_run_duration_seconds", "Wall time of the run.", value=info["duration_s"]
            )


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    import calendar

    try:
        return float(calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def prometheus_registry(run: dict[str, Any]) -> Any:
    """A fresh ``CollectorRegistry`` holding the run's series (no process metrics)."""
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_RunCollector(run))  # type: ignore[arg-type]
    return reg


def prometheus_text(run: dict[str, Any]) -> str:
    from prometheus_client import generate_latest

    return generate_latest(prometheus_registry(run)).decode("utf-8")


def write_prometheus(run: dict[str, Any], path: Path) -> Path:
    """Write the exposition file atomically (node_exporter's textfile collector reads ``*.prom``)."""
    from prometheus_client import write_to_textfile

    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), prometheus_registry(run))
    return path


def push_prometheus(run: dict[str, Any], gateway: str, job: str = "llmeval", timeout: float = 30.0) -> None:
    """Replace the job's group on a Pushgateway with this run's series."""
    from prometheus_client import push_to_gateway

    push_to_gateway(gateway, job=job, registry=prometheus_registry(run), timeout=timeout)


def render(run: dict[str, Any], fmt: str) -> str:
    """The run as text in ``fmt`` (csv gives the results table only)."""
    if fmt == "json":
        return json_text(run)
    if fmt == "prometheus":
        return prometheus_text(run)
    if fmt == "csv":
        buf = io.StringIO()
        write_results_csv(run, buf)
        return buf.getvalue()
    raise ValueError(f"unknown format {fmt!r}: csv, json or prometheus")
