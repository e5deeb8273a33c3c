"""notebooks/results_analysis.ipynb executes headless against a real metrics database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_results_notebook_executes(eval_project, monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cases = [
        {"id": "a", "prompt": "x", "expected": "x"},
        {"id": "b", "prompt": "y", "expected": "nope"},
    ]
    p = eval_project(cases, names=("m1", "m2"))
    r = p.runpytest("--model", "m1,m2")
    r.assert_outcomes(passed=2, failed=2)
    monkeypatch.setenv("LLMEVAL_DB", str(p.path / "metrics.db"))
    nb = nbformat.read(ROOT / "notebooks" / "results_analysis.ipynb", as_version=4)
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = {}
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", out
            if out.get("output_type") == "execute_result":
                outputs[i] = out["data"]["text/plain"]
    text = json.dumps(outputs)
    assert "1 complete runs" in json.dumps([o for c in nb.cells for o in c.get("outputs", [])])
    assert "('test_echo', 'm1'): 0.5" in text and "('test_echo', 'm2'): 0.5" in text
