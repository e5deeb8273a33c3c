"""What a gate option may name: the metrics and their direction, tolerances and floors.

``--tolerance METRIC:DELTA`` and ``--fail-under METRIC=VALUE`` are parsed here; a name that is
not a metric (or ``score:NAME``) is a :class:`MetricSpecError` listing the valid ones and the
closest match. :mod:`.gate` applies them.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from .errors import ConfigError
from .timing import BATCH_METRICS

# The metrics a tolerance or floor can name, with their direction ("lower" is better or
# "higher"); scores are named ``score:NAME`` and checked against the run's aggregates.
METRICS = {"pass_rate": "higher", "latency_p50": "lower", "latency_p95": "lower", "cost": "lower"}
METRICS |= {m: "lower" for m in BATCH_METRICS}  # in-process batches: time to last token, s/token (timing.py)
METRIC_PREFIXES = ("score:",)
# The judge's measured agreement with people (judge_measure.py): a floor only, on every judged test.
JUDGE_KAPPA = "judge_kappa"
LOWER_IS_BETTER = {m for m, d in METRICS.items() if d == "lower"} | {"errors"}
_NAME_RE = re.compile(r"^[\w.-]+$")


class MetricSpecError(ConfigError, ValueError):
    """A tolerance or floor that names no metric, or is malformed.

    A ValueError, so that option parsing turns it into a usage error; a ConfigError,
    so that a bad ini value read at the end of a session becomes a gate error.
    """


def valid_metric_names() -> str:
    """The metric names a tolerance or floor accepts, for error messages."""
    return ", ".join(
        [*METRICS, "score:NAME (a scorer's score, e.g. score:judge)", f"{JUDGE_KAPPA} (floors only)"]
    )


def check_metric_name(metric: str, what: str) -> None:
    """Raise :class:`MetricSpecError` unless ``metric`` is a fixed metric or ``score:NAME``.

    Score names are checked later, against the run's aggregates (:func:`compare`).
    """
    if metric in METRICS or (metric == JUDGE_KAPPA and what.startswith("floor")):
        return
    for prefix in METRIC_PREFIXES:
        if metric.startswith(prefix) and _NAME_RE.match(metric[len(prefix) :]):
            return
    close = difflib.get_close_matches(metric, list(METRICS), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise MetricSpecError(f"bad {what}: unknown metric {metric!r}{hint}; valid: {valid_metric_names()}")


@dataclass(frozen=True)
class Tolerance:
    """Allowed change of a metric: absolute (``-0.02``) or relative (``+25%``)."""

    metric: str
    delta: float
    relative: bool

    def allowed(self, base: float) -> float:
        """The worst acceptable signed change from ``base``."""
        return base * self.delta / 100.0 if self.relative else self.delta

    def __str__(self) -> str:
        return f"{self.metric}:{self.delta:+g}{'%' if self.relative else ''}"


@dataclass(frozen=True)
class Floor:
    """An absolute bound: ``pass_rate=0.8`` (at least) or ``latency_p95=2.0`` (at most)."""

    metric: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}={self.value:g}"


def parse_tolerance(text: str) -> Tolerance:
    """Parse ``METRIC:DELTA`` (``pass_rate:-0.02``, ``latency_p95:+25%``).

    The metric must be one of :data:`METRICS` or ``score:NAME``; anything else is a
    :class:`MetricSpecError` listing the valid names.
    """
    m = re.match(r"^\s*([^:\s]+(?::[\w.-]+)?)\s*:\s*([+-]?\d+(?:\.\d+)?)\s*(%?)\s*$", text)
    if not m:
        raise MetricSpecError(
            f"bad tolerance {text!r}: expected METRIC:DELTA, e.g. pass_rate:-0.02 or latency_p95:+25%"
        )
    metric, delta, pct = m.group(1), float(m.group(2)), bool(m.group(3))
    check_metric_name(metric, f"tolerance {text!r}")
    lower_better = metric in LOWER_IS_BETTER
    if lower_better and delta < 0:
        raise MetricSpecError(
            f"bad tolerance {text!r}: {metric} is lower-is-better, so its tolerance is an increase (+)"
        )
    if not lower_better and delta > 0:
        raise MetricSpecError(
            f"bad tolerance {text!r}: {metric} is higher-is-better, so its tolerance is a drop (-)"
        )
    return Tolerance(metric, delta, pct)


def parse_floor(text: str) -> Floor:
    """Parse ``METRIC=VALUE`` (``pass_rate=0.8``); the metric is checked like a tolerance's."""
    m = re.match(r"^\s*([^=\s]+)\s*=\s*(-?\d+(?:\.\d+)?)\s*$", text)
    if not m:
        raise MetricSpecError(f"bad floor {text!r}: expected METRIC=VALUE, e.g. pass_rate=0.8")
    check_metric_name(m.group(1), f"floor {text!r}")
    return Floor(m.group(1), float(m.group(2)))
