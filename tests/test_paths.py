"""``llmeval``'s rootdir and ini keys agree with pytest's own resolution for the same folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from _pytest.config.findpaths import determine_setup

from pytest_llmeval.paths import ConfigFileError, find_rootdir, project_paths

# Folder layouts: relative path -> file text; the run starts in "a/b".
LAYOUTS = {
    "pytest.ini above a bare pyproject.toml": {
        "pytest.ini": "[pytest]\nllmeval_metrics_db = m.db\n",
        "a/pyproject.toml": "[project]\nname = 'x'\n",
    },
    "pyproject.toml with ini_options": {
        "a/pyproject.toml": "[tool.pytest.ini_options]\nllmeval_runs_dir = 'out/runs'\n",
        "setup.cfg": "[tool:pytest]\n",
    },
    "native [tool.pytest] table": {"a/pyproject.toml": "[tool.pytest]\nllmeval_metrics_db = 'n.db'\n"},
    "tox.ini needs [pytest]": {
        "a/b/tox.ini": "[tox]\n",
        "a/setup.cfg": "[tool:pytest]\nllmeval_metrics_db = /abs/m.db\n",
    },
    "pytest.toml first in its folder": {
        "a/pytest.toml": "[pytest]\nllmeval_metrics_db = 't.db'\n",
        "a/pytest.ini": "[pytest]\n",
    },
    "only a bare pyproject.toml": {"pyproject.toml": "[project]\nname = 'x'\n"},
    "only setup.py": {"a/setup.py": "", "pyproject.toml.txt": ""},
    "nothing": {},
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rootdir_and_ini_like_pytest(layout: str, tmp_path: Path) -> None:
    for rel, text in LAYOUTS[layout].items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    start = tmp_path / "a" / "b"
    start.mkdir(parents=True, exist_ok=True)
    rootdir, inifile, cfg, _ = determine_setup(
        inifile=None, override_ini=None, args=[], rootdir_cmd_arg=None, invocation_dir=start
    )
    ours = find_rootdir(start)
    assert (ours[0], ours[1]) == (rootdir, inifile)
    theirs = {k: str(v.value) for k, v in cfg.items()}
    assert ours[2] == theirs

    paths = project_paths(start)
    db = theirs.get("llmeval_metrics_db", "data/metrics.db")
    assert paths.metrics_db == (Path(db) if Path(db).is_absolute() else rootdir / db)
    assert paths.runs_dir == rootdir / theirs.get("llmeval_runs_dir", "data/runs")


def test_a_broken_config_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options\n")
    with pytest.raises(ConfigFileError, match=r"pyproject\.toml"):
        project_paths(tmp_path)
