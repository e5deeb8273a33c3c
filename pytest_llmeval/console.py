"""Terminal lines and option lookups that every stage shares."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def write_line(config: pytest.Config, line: str, **markup: bool) -> None:
    """A line on the terminal, also while an item runs (when pytest captures fd 1)."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is None:
        return
    # Without suspending capture, a line written during an item would land in the item's
    # captured output instead of on the terminal.
    capman = config.pluginmanager.get_plugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
        from .progress import keep_header_line

        if not keep_header_line(config, line, **markup):  # pytest would print the file's name again
            progress = config.pluginmanager.get_plugin("llmeval-progress")
            if progress is not None:
                progress.clear()
            tr.ensure_newline()
            tw = getattr(tr, "_tw", None)
            if tw is not None and tw.width_of_current_line:  # xdist's dots leave the line open
                tw.line()
            tr.write_line(line, **markup)
        tr.flush()  # a log (CI) gets the line now, not when pytest next writes a result


def option_or_ini(config: pytest.Config, option: str, ini: str) -> Any:
    """The command-line value when given, else the ini key (options win over ini keys)."""
    v = config.getoption(option)
    return v if v not in (None, "", []) else config.getini(ini)


def invocation_path(config: pytest.Config, p: str) -> str:
    """A path as the user typed it: relative to the directory pytest was started in."""
    path = Path(p)
    return str(path if path.is_absolute() else Path(config.invocation_params.dir) / path)


def arg_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type=`` from a parser that raises ValueError: a bad value is a usage error
    when the command line is read, with the parser's message."""

    def convert(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return convert


def add_gate_options(add: Callable[..., Any], baseline_help: str) -> None:
    """The gate's options, added with ``add``: pytest's ``group.addoption`` for a run, argparse's
    ``add_argument`` for ``llmeval merge`` (same flags, same parsing, same destinations)."""
    from .gate import parse_floor, parse_tolerance

    add("--baseline", default=None, metavar="PATH", help=baseline_help)
    add(
        "--save-baseline",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="write the baseline file from this run (default path: the --baseline / ini path)",
    )
    add("--force-save-baseline", action="store_true", help="save the baseline even if items errored")
    add(
        "--tolerance",
        action="append",
        type=arg_type(parse_tolerance),
        default=[],
        metavar="METRIC:DELTA",
        help="allowed change, e.g. pass_rate:-0.02, latency_p95:+25%%, cost:+10%%",
    )
    add(
        "--fail-under",
        action="append",
        type=arg_type(parse_floor),
        default=[],
        metavar="METRIC=VALUE",
        help="absolute floor, e.g. pass_rate=0.8",
    )
    add(
        "--gate-mode",
        choices=("significant", "strict"),
        default=None,
        help="significant (default): a drop must exceed its tolerance and be statistically significant; "
        "strict: the tolerance alone",
    )
    add("--require-baseline", action="store_true", help="fail when a model has no baseline entry")


def split_models(values: list[str]) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``, first occurrence wins."""
    out: list[str] = []
    for v in values:
        for name in re.split(r"[,\s]+", v):
            if name and name not in out:
                out.append(name)
    return out


def load_dotenv(path: Path) -> list[str]:
    """Set variables from a ``.env`` file that the environment does not already set.

    ``KEY=value`` lines, ``#`` comments, optional ``export`` and quotes. Values
    are registered as secrets so that they are scrubbed from every output.
    Returns the names it set.
    """
    from .redact import register_secret

    if not path.is_file():
        return []
    set_names = []
    for raw in path.read_text(encoding="utf-8-sig").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key) or not value:
            continue
        register_secret(value)
        if key not in os.environ:
            os.environ[key] = value
            set_names.append(key)
    return set_names


def output_limit(config: pytest.Config) -> int | None:
    """The output bound of this run in bytes (``--output-limit`` / ``llmeval_output_limit``), None for none."""
    from .bounds import parse_size

    raw = option_or_ini(config, "llmeval_output_limit", "llmeval_output_limit")
    try:
        return parse_size(raw)
    except ValueError as e:
        raise pytest.UsageError(f"ini key llmeval_output_limit: {e}") from None
