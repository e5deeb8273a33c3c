"""The baseline file: its format (checked with a JSON Schema on load), reading and writing it atomically.

Per (test, model): n, pass rate, score means, latency percentiles, cost, errors,
the dataset's sha256, the model spec's hash, and per case: passed, main score,
latency (and, with repeats, the pass fraction and the sample count).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .timing import BATCH_METRICS

FORMAT = "pytest-llmeval-baseline"
VERSION = 1


def git_commit(cwd: str | Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON with stable key order; the old file stays until the new one is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


_OPT_NUM = {"type": ["number", "null"]}
_CASE_SCHEMA = {
    "type": "object",
    "required": ["passed"],
    "properties": {
        "passed": {"type": "boolean"},
        "score": _OPT_NUM,
        "latency": _OPT_NUM,
        "pass_fraction": {"type": "number", "minimum": 0, "maximum": 1},
        "samples": {"type": "integer", "minimum": 1},
    },
    "dependentRequired": {"samples": ["pass_fraction"], "pass_fraction": ["samples"]},
}
_ENTRY_SCHEMA = {
    "type": "object",
    "properties": {
        "n": {"type": "integer", "minimum": 0},
        "pass_rate": _OPT_NUM,
        "scores": {"type": "object", "additionalProperties": _OPT_NUM},
        "latency_p50": _OPT_NUM,
        "latency_p95": _OPT_NUM,
        **{k: _OPT_NUM for k in BATCH_METRICS},
        "cost": _OPT_NUM,
        "errors": {"type": "integer", "minimum": 0},
        "dataset_hash": {"type": ["string", "null"]},
        "model_spec_hash": {"type": ["string", "null"]},
        "cases": {"type": "object", "additionalProperties": _CASE_SCHEMA},
    },
}
# What load_baseline accepts: the shape the gate reads. Unknown keys are allowed so that a
# newer plugin's additions do not break an older reader.
BASELINE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["format", "version", "entries"],
    "properties": {
        "format": {"const": FORMAT},
        "version": {"const": VERSION},
        "metadata": {"type": "object"},
        "entries": {
            "type": "object",
            "additionalProperties": {"type": "object", "additionalProperties": _ENTRY_SCHEMA},
        },
    },
}


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read and check a baseline file against :data:`BASELINE_SCHEMA`.

    A missing, corrupt, foreign or mis-shaped file is a ConfigError that names the
    file, the JSON path of the first bad value and what to do.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"baseline {p} does not exist; create it with --save-baseline {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"baseline {p} is not valid JSON ({e}); restore it from git or recreate it with --save-baseline"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f'baseline {p} is not a pytest-llmeval baseline (missing "format": "{FORMAT}")')
    if data.get("version") != VERSION:
        raise ConfigError(
            f"baseline {p} has format version {data.get('version')!r}; this plugin reads version {VERSION}. "
            "Recreate it with --save-baseline"
        )
    problem = _schema_problem(data)
    if problem:
        raise ConfigError(
            f"baseline {p}: {problem}; fix that value or recreate the file with --save-baseline"
        )
    return data


def _schema_problem(data: Any) -> str | None:
    """The first (deepest, then first in path order) schema violation as "PATH: message", or None."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(BASELINE_SCHEMA)
    errors = list(validator.iter_errors(data))
    if not errors:
        return None
    err = min(errors, key=lambda e: (-len(e.absolute_path), [str(x) for x in e.absolute_path]))
    where = ".".join(str(x) for x in err.absolute_path) or "(top level)"
    # jsonschema quotes the offending value; a huge one (a whole entry) is cut.
    what = err.message if len(err.message) <= 200 else err.message[:200] + "..."
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{where}: {what}{more}"


def _entry(agg: Any, dataset_hash: str | None, spec_hash: str | None) -> dict[str, Any]:
    return {
        "n": agg.n,
        "pass_rate": round(agg.pass_rate, 6),
        "scores": {k: round(v, 6) for k, v in agg.scores.items()},
        "latency_p50": _r(agg.latency_p50),
        "latency_p95": _r(agg.latency_p95),
        **{k: _r(getattr(agg, k)) for k in BATCH_METRICS if getattr(agg, k, None) is not None},
        "cost": round(agg.cost, 8),
        "errors": agg.errors,
        "dataset_hash": dataset_hash,
        "model_spec_hash": spec_hash,
        "cases": {cid: case_entry(c) for cid, c in sorted(agg.cases.items())},
    }


def case_entry(c: dict[str, Any]) -> dict[str, Any]:
    e = {"passed": c["passed"], "score": _r(c.get("score")), "latency": _r(c.get("latency"))}
    if "samples" in c:  # repeats: what the clustered test needs next time
        e["pass_fraction"], e["samples"] = _r(c["pass_fraction"]), c["samples"]
    return e


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 6)


def save_baseline(
    path: str | Path,
    aggregates: list[Any],
    datasets: dict[str, str],
    spec_hashes: dict[str, str | None],
    root: str | Path,
    force: bool = False,
    judges: dict[str, dict[str, Any]] | None = None,
) -> str:
    """Write the baseline for a run's aggregates; refuses a run with errors unless forced.

    Entries of other (test, model) pairs already in the file are kept.
    """
    from . import __version__

    errors = sum(a.errors for a in aggregates)
    if errors and not force:
        raise ConfigError(
            f"{errors} item(s) errored; a baseline from incomplete data is refused (--force-save-baseline)"
        )
    p = Path(path)
    entries: dict[str, Any] = {}
    if p.is_file():
        try:
            entries = load_baseline(p)["entries"]
        except ConfigError:
            entries = {}
    for a in aggregates:
        entries.setdefault(a.test, {})[a.model] = _entry(a, datasets.get(a.test), spec_hashes.get(a.model))
        if judges and a.test in judges and "judge" in a.scores:  # the judge behind the judge scores
            entries[a.test][a.model]["judge"] = judges[a.test]
    data = {
        "format": FORMAT,
        "version": VERSION,
        "metadata": {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "git_commit": git_commit(root),
            "plugin_version": __version__,
        },
        "entries": entries,
    }
    write_json_atomic(p, data)
    return str(p)
