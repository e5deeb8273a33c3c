"""pytest entry point: options, ini keys, markers and fixtures.

The work lives in the stages that ``session.LLMEvalSession`` (registered here) routes pytest's hooks to.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

import pytest

from .bounds import HELP as HELP_OUTPUT_LIMIT
from .console import add_gate_options, arg_type
from .session import SESSION_KEY, LLMEvalSession
from .shards import parse_shard

HELP_MODEL = "model(s) from the models file to run evals against; repeatable and comma-separated"
HELP_MODELS_FILE = (
    "models file adding to (or overriding) the built-in models (default: evals/models.yaml when it exists)"
)
HELP_JUDGE = "model that judges answers for the judge fixture (default: gpt-4o-mini with a key, else smollm2)"
HELP_CACHE = "response cache mode: rw (default), ro, off, refresh"
HELP_BASELINE = "baseline JSON file to compare aggregates with; the gate decides the exit status"


def _cost(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--max-cost takes a number of US dollars, got {value!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError("--max-cost must not be negative")
    return v


def _cache_mode(value: str) -> str:
    if value not in ("rw", "ro", "off", "refresh"):
        raise argparse.ArgumentTypeError(f"--cache takes rw, ro, off or refresh, got {value!r}")
    return value


def _output_limit(value: str) -> str:
    from .bounds import parse_size

    try:
        parse_size(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--output-limit: {e}") from None
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llmeval", "LLM evaluation (pytest-llmeval)")
    group.addoption("--model", action="append", default=[], metavar="NAME", help=HELP_MODEL)
    group.addoption("--models-file", default=None, metavar="PATH", help=HELP_MODELS_FILE)
    group.addoption(
        "--list-models", action="store_true", help="list configured models and whether each can run here"
    )
    group.addoption("--judge", default=None, metavar="NAME", help=HELP_JUDGE)
    group.addoption(
        "--judge-samples", type=int, default=None, metavar="N", help="judge verdicts per answer (majority)"
    )
    group.addoption(
        "--no-judge-stage",
        action="store_true",
        help="grade declared judges in the test body, one call at a time (the serial path), not as a pipeline "
        "stage",
    )
    group.addoption(
        "--cache", dest="llmeval_cache", type=_cache_mode, default=None, metavar="MODE", help=HELP_CACHE
    )
    group.addoption(
        "--cache-path", dest="llmeval_cache_path", default=None, metavar="PATH", help="response cache file"
    )
    group.addoption(
        "--no-scheduler",
        action="store_true",
        help="generate one request at a time when each test runs (for debugging)",
    )
    group.addoption(
        "--max-cost", type=_cost, default=None, metavar="USD", help="stop submitting requests past this spend"
    )
    group.addoption(
        "--estimate-cost",
        action="store_true",
        help="with --collect-only: print token and cost estimates per model",
    )
    add_gate_options(group.addoption, HELP_BASELINE)
    group.addoption(
        "--metrics-db", default=None, metavar="PATH", help="SQLite metrics database (default data/metrics.db)"
    )
    group.addoption(
        "--no-metrics", action="store_true", help="do not write the metrics database or run folder"
    )
    group.addoption(
        "--output",
        dest="llmeval_output",
        default=None,
        metavar="DIR",
        help="run folder (default data/runs/<run id>)",
    )
    group.addoption(
        "--shard",
        dest="llmeval_shard",
        type=arg_type(parse_shard),
        default=None,
        metavar="K/N",
        help="run shard K of N: a deterministic 1/N of the cases, chosen by test and case id (every model of "
        "a case in the same shard); not gated: `llmeval merge` joins the shards' run folders and gates",
    )
    group.addoption("--no-llmeval-report", action="store_true", help="do not write the default HTML report")
    group.addoption("--otel", action="store_true", help="emit OpenTelemetry traces (also ENABLE_OTEL=true)")
    group.addoption(
        "--llmeval-summary",
        dest="llmeval_summary",
        default=None,
        metavar="FILE",
        help="write the run's Markdown summary (verdict, results, gate, flipped cases) to FILE; "
        "also written to $GITHUB_STEP_SUMMARY when that is set",
    )
    group.addoption(
        "--output-limit",
        dest="llmeval_output_limit",
        type=_output_limit,
        default=None,
        metavar="SIZE",
        help=HELP_OUTPUT_LIMIT,
    )

    from .repeats import HELP_REPEAT, HELP_REPEAT_POLICY, parse_repeat

    group.addoption(
        "--repeat",
        dest="llmeval_repeat",
        type=arg_type(parse_repeat),
        default=None,
        metavar="N",
        help=HELP_REPEAT,
    )
    group.addoption(
        "--repeat-policy",
        dest="llmeval_repeat_policy",
        choices=("all", "majority", "any"),
        default=None,
        help=HELP_REPEAT_POLICY,
    )
    parser.addini("llmeval_repeat", "samples per (case, model), like --repeat (default 1)", default="1")
    parser.addini("llmeval_repeat_policy", HELP_REPEAT_POLICY, default="")

    parser.addini("llmeval_model", HELP_MODEL, default="")
    parser.addini("llmeval_models_file", HELP_MODELS_FILE, default="")
    parser.addini("llmeval_judge", HELP_JUDGE, default="")
    parser.addini("llmeval_cache", HELP_CACHE, default="rw")
    parser.addini("llmeval_cache_path", "response cache file", default=".llmeval/cache.sqlite")
    parser.addini("llmeval_baseline", HELP_BASELINE, default="")
    parser.addini(
        "llmeval_tolerance", "default tolerances, one per line (METRIC:DELTA)", type="linelist", default=[]
    )
    parser.addini(
        "llmeval_fail_under", "default floors, one per line (METRIC=VALUE)", type="linelist", default=[]
    )
    parser.addini("llmeval_metrics_db", "SQLite metrics database", default="data/metrics.db")
    parser.addini("llmeval_runs_dir", "where run folders go", default="data/runs")
    parser.addini("llmeval_output_limit", HELP_OUTPUT_LIMIT, default="64KiB")
    parser.addini(
        "llmeval_progress_every",
        "seconds between generation progress lines in a log (default 30; a terminal's status line is updated in place)",
        default="30",
    )
    parser.addini(
        "llmeval_progress",
        "generation progress: auto (a status line in place on a terminal, else a line now and then), terminal, "
        "log or off",
        default="auto",
    )


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hooks

    pluginmanager.add_hookspecs(hooks)


def pytest_cmdline_main(config: pytest.Config) -> int | None:
    if config.getoption("list_models"):
        from _pytest.main import wrap_session

        from .selection import list_models_main

        return wrap_session(config, list_models_main)
    return None


# The sessions of the pytest runs in progress in this process, innermost last (pytester
# runs one inside another). The per-item fixtures find theirs here, see _current().
_ACTIVE: list[LLMEvalSession] = []


@pytest.hookimpl(tryfirst=True)  # before pytest-html's, which reads the report path we may default
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "llmeval_dataset(path, prompt, params): parametrize a test over dataset cases"
    )
    session = LLMEvalSession(config)
    config.stash[SESSION_KEY] = session
    _ACTIVE.append(session)
    config.pluginmanager.register(session, "llmeval-session")
    if config.pluginmanager.hasplugin("html") and not session.is_worker:
        from .report import HtmlReport

        session.html = HtmlReport(config, session.run_id, bool(session.selected), session.records)
        config.pluginmanager.register(session.html, "llmeval-html")


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session in _ACTIVE:
        _ACTIVE.remove(session)


def _session(config: pytest.Config) -> LLMEvalSession:
    return config.stash[SESSION_KEY]


def _current() -> tuple[LLMEvalSession, pytest.Item]:
    """The running session and the item being set up.

    The per-item fixtures take no ``request``: pytest builds a fixture definition
    for every ``request`` a fixture asks for, and for ``model``, ``case`` and
    ``completion`` that was the largest part of the plugin's cost per item.
    """
    session = _ACTIVE[-1]
    if session.current_item is None:
        raise RuntimeError("pytest-llmeval fixtures are only available while a test item runs")
    return session, session.current_item


class ModelHandle:
    """What the ``model`` fixture gives a test: a name, its spec, and ``generate``."""

    def __init__(self, session: LLMEvalSession, name: str) -> None:
        self._generation = session.generation
        self.name = name
        self.spec = session.selection.spec(name)

    def generate(self, messages: list[dict[str, str]] | str, **params: Any) -> Any:
        """Generate one completion now (multi-turn tests); goes through cache and retries."""
        return self._generation.generate_now(self.name, messages, **params)

    def __repr__(self) -> str:
        return f"<model {self.name}>"

    def __str__(self) -> str:
        return self.name


@pytest.fixture
def model() -> ModelHandle:
    """The model this item runs against (parametrized from --model)."""
    session, item = _current()
    return ModelHandle(session, item.callspec.params["model"])  # type: ignore[attr-defined]


@pytest.fixture
def case() -> Any:
    """The dataset case of this item."""
    _, item = _current()
    return item.callspec.params["case"]  # type: ignore[attr-defined]


@pytest.fixture
def completion(model: ModelHandle, case: Any) -> Any:
    """This item's completion, generated ahead by the scheduler."""
    session, item = _current()
    return session.generation.completion_for(item)


@pytest.fixture
def judge(request: pytest.FixtureRequest) -> Any:
    """An LLM judge backed by --judge (see pytest_llmeval.judge)."""
    from .judge import Judge

    session = _session(request.config)
    return Judge(session.config, session.selection, session.generation, request.node)


@pytest.fixture
def llmeval_session(request: pytest.FixtureRequest) -> Iterator[LLMEvalSession]:
    """The plugin's session object (for advanced tests)."""
    yield _session(request.config)
