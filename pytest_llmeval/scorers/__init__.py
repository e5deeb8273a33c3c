"""Scorers are the assertions of an eval: each records a numeric Score on the item and fails
it (an ordinary failed test) when the score is below its threshold.

Use :func:`soft` to record every score of an item and fail once at the end.
"""

from __future__ import annotations

from ._base import Score, ScoreFailure, make_score, record, scorer, soft
from .deterministic import (
    contains,
    exact_match,
    faithfulness,
    field_accuracy,
    json_valid,
    key_facts,
    matches_schema,
    normalize_text,
    numeric_close,
    regex,
    type_correctness,
    values_equal,
)

__all__ = [
    "Score",
    "ScoreFailure",
    "contains",
    "exact_match",
    "faithfulness",
    "field_accuracy",
    "json_valid",
    "key_facts",
    "make_score",
    "matches_schema",
    "normalize_text",
    "numeric_close",
    "record",
    "regex",
    "scorer",
    "soft",
    "type_correctness",
    "values_equal",
]
