"""Deterministic validators. Each records a Score on the item and fails it below threshold.

Normalisation (documented in docs/scorers.md and the task READMEs):

* strings: Unicode NFC, casefold, whitespace collapsed, stripped;
* numbers: equal within a relative tolerance of 1e-6; a numeric string such as
  ``"32"`` compares equal to ``32`` in ``field_accuracy`` (``type_correctness``
  is where the wrong type is penalised);
* dates: compared as normalised strings (the tasks ask for ISO ``YYYY-MM-DD``);
* ``null`` versus an absent key: an absent key is wrong, even when null is expected.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

from ._base import Score, make_score, normalize_text, record
from .grounding import faithfulness, key_facts  # noqa: F401  (re-exported: the grounding scorers)

_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)
_MISSING = object()
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _short(value: Any, limit: int = 80) -> str:
    if value is _MISSING:
        return "<absent>"
    s = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        s = value.strip()
        if "," in s:
            # Only thousands separators ("1,200"); a decimal comma ("1,2") is not read as 12.
            if not _THOUSANDS.fullmatch(s):
                return None
            s = s.replace(",", "")
        try:
            return float(s)
        except ValueError:
            return None
    return None


def values_equal(got: Any, expected: Any, rel_tol: float = 1e-6) -> bool:
    """Leaf comparison with the documented normalisation."""
    if expected is None or got is None:
        return got is None and expected is None
    if isinstance(expected, bool) or isinstance(got, bool):
        return got is expected
    if isinstance(expected, (int, float)):
        n = _as_number(got)
        return n is not None and math.isclose(n, float(expected), rel_tol=rel_tol, abs_tol=1e-9)
    if isinstance(expected, str):
        if isinstance(got, (dict, list)):
            return False
        return normalize_text(got) == normalize_text(expected)
    return got == expected


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_valid(text: str, *, strip_fences: bool = False, at_least: float = 1.0) -> Any:
    """Parse ``text`` as JSON strictly; return the value, or None when invalid.

    Records ``json_valid`` (1 or 0). With ``strip_fences=True`` a Markdown code
    fence around the JSON is tolerated, and the score is recorded separately as
    ``json_valid_fenced`` so lenient and strict results are never mixed.
    """
    __tracebackhide__ = True
    name = "json_valid_fenced" if strip_fences else "json_valid"
    src = text.strip()
    if strip_fences:
        m = _FENCE.match(src)
        if m:
            src = m.group(1).strip()
    try:
        value = json.loads(src, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        snippet = src[:120].replace("\n", "\\n")
        record(make_score(name, 0.0, at_least, f"not JSON ({e}); output starts: {snippet!r}"))
        return None
    record(make_score(name, 1.0, at_least))
    return value


def matches_schema(data: Any, schema: dict[str, Any], *, at_least: float = 1.0) -> Score:
    """1 if ``data`` validates against the JSON Schema, else 0 with the first errors."""
    __tracebackhide__ = True
    import jsonschema

    if data is None and schema.get("type") not in (None, "null"):
        return record(make_score("schema_valid", 0.0, at_least, "no JSON value to validate"))
    cls = jsonschema.validators.validator_for(schema)
    errors = sorted(cls(schema).iter_errors(data), key=lambda e: list(e.path))
    if not errors:
        return record(make_score("schema_valid", 1.0, at_least))
    lines = [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message[:160]}" for e in errors[:5]]
    more = f"\n... and {len(errors) - 5} more" if len(errors) > 5 else ""
    return record(make_score("schema_valid", 0.0, at_least, "\n".join(lines) + more))


def _leaves(expected: Any, got: Any, path: str, out: list[tuple[str, Any, Any]]) -> None:
    if isinstance(expected, dict):
        for key, sub in expected.items():
            g = got.get(key, _MISSING) if isinstance(got, dict) else _MISSING
            _leaves(sub, g, f"{path}.{key}" if path else key, out)
        return
    if isinstance(expected, list):
        glist = got if isinstance(got, list) else []
        for i, sub in enumerate(expected):
            _leaves(sub, glist[i] if i < len(glist) else _MISSING, f"{path}[{i}]", out)
        # Extra elements are wrong answers too: count each as a miss.
        for i in range(len(expected), len(glist)):
            out.append((f"{path}[{i}]", _MISSING, glist[i]))
        if not expected and isinstance(got, list) and not got:
            out.append((path, [], []))
        elif not expected and not isinstance(got, list):
            out.append((path, [], got))
        return
    out.append((path or "<root>", expected, got))


def field_accuracy(data: Any, expected: Any, *, at_least: float = 1.0) -> Score:
    """Share of expected leaf fields whose value matches (nested objects and arrays by index)."""
    __tracebackhide__ = True
    leaves: list[tuple[str, Any, Any]] = []
    _leaves(expected, data if data is not None else {}, "", leaves)
    if not leaves:
        return record(make_score("field_accuracy", 1.0, at_least))
    wrong = []
    for path, exp, got in leaves:
        ok = got is not _MISSING and exp is not _MISSING and values_equal(got, exp)
        if isinstance(exp, list) and isinstance(got, list):
            ok = exp == got
        if not ok:
            wrong.append(f"{path}: expected {_short(exp)}, got {_short(got)}")
    value = 1.0 - len(wrong) / len(leaves)
    expl = "\n".join(wrong[:12]) + (f"\n... and {len(wrong) - 12} more" if len(wrong) > 12 else "")
    return record(make_score("field_accuracy", value, at_least, expl))


_JSON_TYPES = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
    ),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def _type_checks(value: Any, schema: dict[str, Any], path: str, out: list[tuple[str, bool, str]]) -> None:
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        ok = any(_JSON_TYPES.get(x, lambda v: True)(value) for x in types)
        out.append((path or "<root>", ok, "/".join(types)))
        if not ok:
            return
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                _type_checks(value[key], sub, f"{path}.{key}" if path else key, out)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _type_checks(item, schema["items"], f"{path}[{i}]", out)


def type_correctness(data: Any, schema: dict[str, Any], *, at_least: float = 1.0) -> Score:
    """Share of present values whose JSON type matches the schema (``"32"`` for a number is wrong)."""
    __tracebackhide__ = True
    if data is None:
        return record(make_score("type_correctness", 0.0, at_least, "no JSON value"))
    checks: list[tuple[str, bool, str]] = []
    _type_checks(data, schema, "", checks)
    if not checks:
        return record(make_score("type_correctness", 1.0, at_least))
    bad = [f"{p}: expected {t}" for p, ok, t in checks if not ok]
    return record(make_score("type_correctness", 1 - len(bad) / len(checks), at_least, "\n".join(bad[:12])))


def exact_match(
    got: str,
    expected: str | list[str],
    *,
    normalize: bool = True,
    ignore_punctuation: bool = False,
    at_least: float = 1.0,
) -> Score:
    """1 if ``got`` equals ``expected`` (or any of a list of accepted answers)."""
    __tracebackhide__ = True

    def norm(s: str) -> str:
        s = normalize_text(s) if normalize else s
        if ignore_punctuation:
            s = " ".join(re.sub(r"[^\w\s]", " ", s).split())
        return s

    accepted = [expected] if isinstance(expected, str) else list(expected)
    ok = any(norm(got) == norm(a) for a in accepted)
    expl = (
        "" if ok else f"expected {_short(accepted[0] if len(accepted) == 1 else accepted)}, got {_short(got)}"
    )
    return record(make_score("exact_match", 1.0 if ok else 0.0, at_least, expl))


def _nfc_space(value: Any) -> str:
    """Like normalize_text but keeps case."""
    return " ".join(unicodedata.normalize("NFC", str(value)).split())


def contains(
    text: str,
    needles: str | list[str],
    *,
    mode: str = "all",
    case_sensitive: bool = False,
    at_least: float | None = None,
) -> Score:
    """Share of ``needles`` found in ``text``; ``mode='any'`` scores 1 if any is found."""
    __tracebackhide__ = True
    items = [needles] if isinstance(needles, str) else list(needles)
    norm = _nfc_space if case_sensitive else normalize_text
    hay = norm(text)
    found = [n for n in items if norm(n) in hay]
    missing = [n for n in items if n not in found]
    value = (1.0 if found else 0.0) if mode == "any" else (len(found) / len(items) if items else 1.0)
    threshold = at_least if at_least is not None else 1.0
    expl = f"missing: {', '.join(map(repr, missing))}" if missing else ""
    return record(make_score("contains", value, threshold, expl))


def regex(
    text: str, pattern: str, *, flags: int = 0, fullmatch: bool = False, at_least: float = 1.0
) -> Score:
    """1 if ``pattern`` matches ``text`` (search, or fullmatch)."""
    __tracebackhide__ = True
    rx = re.compile(pattern, flags)
    m = rx.fullmatch(text) if fullmatch else rx.search(text)
    expl = "" if m else f"pattern {pattern!r} not found in {_short(text)}"
    return record(make_score("regex", 1.0 if m else 0.0, at_least, expl))


_NUM = re.compile(r"-?\d+(?:[.,]\d+)*(?:\.\d+)?")


def numeric_close(
    got: Any, expected: float, *, rel_tol: float = 1e-6, abs_tol: float = 0.0, at_least: float = 1.0
) -> Score:
    """1 if ``got`` (a number, or the first number in a text) is close to ``expected``."""
    __tracebackhide__ = True
    n = _as_number(got)
    if n is None and isinstance(got, str):
        m = _NUM.search(got)
        n = _as_number(m.group(0)) if m else None
    ok = n is not None and math.isclose(n, float(expected), rel_tol=rel_tol, abs_tol=abs_tol)
    expl = "" if ok else f"expected {expected}, got {_short(got)}"
    return record(make_score("numeric_close", 1.0 if ok else 0.0, at_least, expl))
