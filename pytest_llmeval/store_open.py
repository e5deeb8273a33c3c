"""Opening a run's store from the plugin: where its database and run folder go.

A path given as an option is relative to the invocation directory (as typed); one from an ini
key, to the rootdir, so ``pytest`` and ``llmeval`` find the same ``data/metrics.db`` from any
directory of the project.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .metrics_db import _dumps, command_line, iso
from .store import DEFAULT_RUNS_DIR, MetricsStore


def _terminal_warn(config: Any) -> Callable[[str], None]:
    def warn(message: str) -> None:
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.ensure_newline()
            tr.write_line(message, yellow=True)
        else:
            print(message, file=sys.stderr)

    return warn


def _path_option(config: Any, option: str, ini: str) -> Path:
    """An option is relative to the invocation directory (as typed); an ini key to the rootdir."""
    opt = config.getoption(option)
    path = Path(opt or config.getini(ini))
    if not path.is_absolute():
        path = (Path(config.invocation_params.dir) if opt else Path(config.rootpath)) / path
    return path


def db_path_for(config: Any) -> Path:
    return _path_option(config, "metrics_db", "llmeval_metrics_db")


def run_dir_for(config: Any, run_id: str) -> Path:
    """``--output DIR`` itself, else ``<llmeval_runs_dir>/<run id>``."""
    if config.getoption("llmeval_output"):
        return _path_option(config, "llmeval_output", "llmeval_runs_dir")
    runs = Path(config.getini("llmeval_runs_dir") or DEFAULT_RUNS_DIR)
    return (runs if runs.is_absolute() else Path(config.rootpath) / runs) / run_id


def open_run(
    config: Any,
    *,
    run_id: str,
    started: float,
    models: list[str],
    model_specs: Callable[[], dict[str, Any]],
    datasets: dict[str, str],
    shard: Any = None,
) -> MetricsStore:
    """The store of a run. Nothing is written until the first result arrives: then the run row
    (incomplete until the end) and the run folder appear. ``shard`` is the run's ``--shard``."""
    from . import __version__
    from .baseline import git_commit

    run_dir = run_dir_for(config, run_id)

    def run_row() -> dict[str, Any]:
        return {
            "id": run_id,
            "started": iso(started),
            "git_commit": git_commit(config.rootpath),
            "command": command_line(config),
            "rootdir": str(config.rootpath),
            "models": _dumps(list(models)),
            "model_specs": _dumps(model_specs()),
            "datasets": _dumps(dict(datasets)),
            "plugin_version": __version__,
            "complete": 0,
            "run_dir": str(run_dir),
            "shard": None if shard is None else str(shard),
        }

    from .console import output_limit

    return MetricsStore(
        run_id,
        db_path_for(config),
        run_dir,
        run_row,
        warn=_terminal_warn(config),
        lazy=shard is None,
        keep_empty=shard is not None,
        output_limit=output_limit(config),
    )
