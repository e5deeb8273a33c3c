"""Which judge model grades, with which rubric, and what is known of its agreement with people.

The judge is chosen deliberately (``--judge``, the ini key, a plugin hook, gpt-4o-mini when its
key is set, else the best measured local judge) and never silently the model under test without
saying so; the agreement note is what a run prints beside the judge's scores.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError

API_JUDGE = "gpt-4o-mini"
DEFAULT_JUDGE = "smollm2"


# -- choosing the judge model --------------------------------------------------------
def resolve_judge_model(config: Any, specs: dict[str, Any]) -> str:
    """``--judge`` > ini ``llmeval_judge`` > the ``pytest_llmeval_judge_model`` hook >
    gpt-4o-mini (when configured and its key is set) > the best judge available here."""
    return choose_judge(config, specs)[0]


def choose_judge(config: Any, specs: dict[str, Any], under_test: tuple[str, ...] = ()) -> tuple[str, str]:
    """The judge model and why it was chosen (the session header says both).

    With no judge configured, the judge is never silently the model under test: gpt-4o-mini when
    its key is set, else :func:`best_local_judge`, whose reason says when it is a model under test.
    """
    name = config.getoption("judge", None)
    if name:
        return name, "--judge"
    name = (config.getini("llmeval_judge") or "").strip()
    if name:
        return name, "ini llmeval_judge"
    name = config.hook.pytest_llmeval_judge_model(config=config)
    if name:
        return name, "the pytest_llmeval_judge_model hook"
    api = specs.get(API_JUDGE)
    if api is not None and (not api.api_key_env or os.environ.get(api.api_key_env)):
        return API_JUDGE, f"no judge configured; {api.api_key_env or 'its API key'} is set"
    return best_local_judge(getattr(config, "rootpath", "."), specs, under_test)


def best_local_judge(
    root: str | Path, specs: dict[str, Any], under_test: tuple[str, ...] = ()
) -> tuple[str, str]:
    """With no judge configured and no API key: the runnable model with the best measured agreement
    (``data/judge_calibration-<model>.json``, written by the calibration CLI), else the embedded smollm2."""
    key_env = getattr(specs.get(API_JUDGE), "api_key_env", None) or "OPENAI_API_KEY"
    measured: list[tuple[float, str]] = []
    for name in specs:
        if name == API_JUDGE:
            continue
        try:
            data = json.loads(calibration_path(root, name).read_text(encoding="utf-8"))
            kappa = float(data["agreement"]["kappa_quadratic"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not math.isnan(kappa) and specs[name].availability()[0]:
            measured.append((kappa, name))
    if measured:
        kappa, name = max(measured, key=lambda t: (t[0], t[1] not in under_test))
        why = f"no judge configured, {key_env} not set; best measured agreement here (kappa {kappa:.2f})"
    else:
        name = DEFAULT_JUDGE
        why = f"no judge configured, {key_env} not set; the embedded model, the only judge that needs nothing"
    if name in under_test:
        why += "; it is also a model under test, so weigh its scores by its measured agreement"
    return name, why + "; --judge NAME chooses another"


def default_judge_model(specs: dict[str, Any]) -> str:
    """gpt-4o-mini when models.yaml has it and its API key is in the environment, else smollm2."""
    api = specs.get(API_JUDGE)
    if api is not None and (not api.api_key_env or os.environ.get(api.api_key_env)):
        return API_JUDGE
    return DEFAULT_JUDGE


def check_judge_model(name: str, specs: dict[str, Any], source: str = "models.yaml") -> None:
    """Raise ConfigError if ``name`` is not a runnable model of ``specs``."""
    if name not in specs:
        raise ConfigError(
            f"judge model {name!r} is not in {source}; available: {', '.join(specs)}. "
            "Choose one with --judge NAME or the llmeval_judge ini key."
        )
    ok, why = specs[name].availability()
    if not ok:
        raise ConfigError(f"judge model {name!r} cannot run here: {why} (choose another with --judge NAME)")


def load_rubric(path: str | Path) -> str:
    """Read a rubric file (any text; an anchored 1-5 scale works best)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"rubric {p} does not exist (a path relative to the test file, or absolute)")
    text = p.read_text(encoding="utf-8-sig").strip()
    if not text:
        raise ConfigError(f"rubric {p} is empty")
    return text


def rubric_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- calibration note --------------------------------------------------------------
def calibration_path(root: str | Path, judge_model: str) -> Path:
    """Where the calibration CLI writes its figures by default (and where the session looks)."""
    return Path(root) / "data" / f"judge_calibration-{judge_model}.json"


def agreement_note(root: str | Path, judge_model: str, rubric_text: str | None = None) -> str:
    """One line on how well ``judge_model`` agreed with people, from its latest calibration file."""
    path = calibration_path(root, judge_model)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return (
            f"not measured for {judge_model}: run python -m pytest_llmeval.calibration --judge {judge_model} "
            "--calibration CALIBRATION.jsonl --rubric RUBRIC.md"
        )
    rel = os.path.relpath(path, root)
    a = data.get("agreement", {})

    def f(v: Any) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"

    note = (
        f"exact {f(a.get('exact'))}, within-1 {f(a.get('within_one'))}, kappa {f(a.get('kappa_quadratic'))}, "
        f"spearman {f(a.get('spearman'))}, parse failures {f(data.get('parse_failure_rate'))} "
        f"(n={a.get('n', '?')}, {rel}, {str(data.get('date', '?'))[:10]})"
    )
    if rubric_text is not None and data.get("rubric_sha256") not in (None, rubric_hash(rubric_text)):
        note += "; measured with a different rubric"
    return note
