"""The GitHub workflow files validate against the workflow schema (offline, vendored schema)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")


def _validate(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHECK, "--builtin-schema", "vendor.github-workflows", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_workflows_are_valid():
    files = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert {f.name for f in files} >= {"tests.yml", "evals.yml"}
    out = _validate(*files)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_validator_rejects_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps: nope\n")
    assert _validate(bad).returncode != 0


@pytest.mark.parametrize("workflow", ["tests.yml", "evals.yml"])
def test_workflows_use_the_readme_commands(workflow):
    text = (ROOT / ".github" / "workflows" / workflow).read_text()
    assert "make setup" in text
    assert ("make test" in text) if workflow == "tests.yml" else ("make eval" in text)
