"""Where a project's files are when no pytest run is there to say: the rootdir and its ini keys.

The ``llmeval`` console resolves its default paths as pytest resolves them for a
run started in the same directory without arguments, so that ``llmeval runs``
finds the database ``pytest`` wrote, from the project root or any folder below:

* the rootdir is the folder of the first config file found from the current
  directory upward: ``pytest.toml``, ``pytest.ini`` (and their dot-names, always),
  ``pyproject.toml`` with a ``[tool.pytest]`` or ``[tool.pytest.ini_options]``
  table, ``tox.ini`` with ``[pytest]``, ``setup.cfg`` with ``[tool:pytest]``;
  failing that, the folder of the nearest ``pyproject.toml``, then of a
  ``setup.py``, then the current directory (pytest 9's order);
* the ini keys ``llmeval_metrics_db``, ``llmeval_runs_dir`` and
  ``llmeval_models_file`` in that file override the defaults; relative values
  are relative to the rootdir, as in a run.
"""

from __future__ import annotations

import configparser
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .metrics_db import DEFAULT_DB
from .models import DEFAULT_MODELS_FILE
from .store import DEFAULT_RUNS_DIR

# In pytest's order of precedence within one folder.
_CONFIG_NAMES = (
    "pytest.toml",
    ".pytest.toml",
    "pytest.ini",
    ".pytest.ini",
    "pyproject.toml",
    "tox.ini",
    "setup.cfg",
)


class ConfigFileError(Exception):
    """A config file on the way up cannot be parsed; the message names it."""


@dataclass(frozen=True)
class ProjectPaths:
    """The rootdir, the config file found (if any) and the default paths under them."""

    rootdir: Path
    inifile: Path | None
    metrics_db: Path
    runs_dir: Path
    models_file: Path
    settings: dict[str, str] = field(default_factory=dict)  # the config file's pytest settings

    def ini_lines(self, key: str) -> list[str]:
        """A "linelist" ini key (``llmeval_tolerance``, ...): its non-empty lines."""
        return [line.strip() for line in self.settings.get(key, "").splitlines() if line.strip()]


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigFileError(f"{path}: {e}") from None


def _ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as e:
        raise ConfigFileError(f"{path}: {e}") from None
    return parser


def _toml_value(value: Any) -> str:
    # A TOML list is what an ini file writes one item a line (pytest's "linelist").
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def pytest_settings(path: Path) -> dict[str, str] | None:
    """The pytest settings in config file ``path``, or None when it holds none (pytest then looks on)."""
    name = path.name
    if name in ("pytest.toml", ".pytest.toml"):
        table = _toml(path).get("pytest", {})
        return {str(k): _toml_value(v) for k, v in table.items()} if isinstance(table, dict) else {}
    if name == "pyproject.toml":
        tool = _toml(path).get("tool", {}).get("pytest")
        if not isinstance(tool, dict):
            return None
        table = tool.get("ini_options", tool)
        return {str(k): _toml_value(v) for k, v in table.items() if not isinstance(v, dict)}
    parser = _ini(path)
    section = "tool:pytest" if name == "setup.cfg" else "pytest"
    if parser.has_section(section):
        return dict(parser.items(section))
    return {} if name in ("pytest.ini", ".pytest.ini") else None


def find_rootdir(start: Path) -> tuple[Path, Path | None, dict[str, str]]:
    """pytest's rootdir for a run without arguments in ``start``: (rootdir, config file, its settings)."""
    start = start.resolve()
    dirs = [start, *start.parents]
    pyproject: Path | None = None
    for d in dirs:
        for name in _CONFIG_NAMES:
            p = d / name
            if p.is_file():
                if name == "pyproject.toml" and pyproject is None:
                    pyproject = p
                settings = pytest_settings(p)
                if settings is not None:
                    return d, p, settings
    if pyproject is not None:
        return pyproject.parent, pyproject, {}
    for d in dirs:
        if (d / "setup.py").is_file():
            return d, None, {}
    return start, None, {}


def project_paths(start: Path | None = None) -> ProjectPaths:
    """The default metrics database, runs folder and models file for a run started in ``start``."""
    rootdir, inifile, settings = find_rootdir(Path.cwd() if start is None else start)

    def resolve(key: str, default: str) -> Path:
        p = Path(settings.get(key) or default).expanduser()
        return p if p.is_absolute() else rootdir / p

    return ProjectPaths(
        rootdir=rootdir,
        inifile=inifile,
        metrics_db=resolve("llmeval_metrics_db", DEFAULT_DB),
        runs_dir=resolve("llmeval_runs_dir", DEFAULT_RUNS_DIR),
        models_file=resolve("llmeval_models_file", DEFAULT_MODELS_FILE),
        settings=dict(settings),
    )
