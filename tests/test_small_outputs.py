"""Small outputs that a person reads: the report's legend, one report line, model descriptions."""

from __future__ import annotations

import re

from pytest_llmeval import cli
from pytest_llmeval.report import side_by_side
from pytest_llmeval.results import CaseResult

CASES = [
    {"id": "ok-1", "prompt": "hello", "expected": "hello"},
    {"id": "bad-1", "prompt": "wrong", "expected": "right"},
]


def _rec(model: str, case: str, outcome: str, output: str) -> CaseResult:
    return CaseResult(
        nodeid=f"t.py::test_x[{model}-{case}]",
        test="t.py::test_x",
        model=model,
        case_id=case,
        outcome=outcome,
        passed=outcome == "passed",
        output=output,
    )


def test_side_by_side_explains_its_orange_border():
    recs = [
        _rec("a", "same", "passed", "x"),
        _rec("b", "same", "passed", "x"),
        _rec("a", "differs", "passed", "x"),
        _rec("b", "differs", "failed", "y"),
    ]
    html = side_by_side({r.nodeid: r for r in recs})
    assert "an orange left border marks a case whose models differ" in html
    rows = re.findall(r"<tr class=\"llm-sbs-row[^>]*>", html)
    assert len(rows) == 2
    differs = [r for r in rows if "llm-differs" in r]
    assert len(differs) == 1 and 'title="the models differ on this case' in differs[0]


def test_a_run_names_its_report_once(eval_project):
    p = eval_project(CASES)
    result = p.runpytest("--model", "fake", "-p", "no:randomly")
    out = result.stdout.str()
    assert len(re.findall(r"HTML report: .*report\.html", out)) == 1
    assert "Generated html report" not in out


def test_a_plain_html_run_keeps_pytest_htmls_line(pytester):
    pytester.makepyfile("def test_plain():\n    assert True\n")
    result = pytester.runpytest("--html", "r.html")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*Generated html report: file://*r.html*"])


def test_llmeval_models_shows_descriptions(pytester, capsys):
    models = pytester.path / "models.yaml"
    models.write_text(
        "models:\n  mine:\n    type: openai\n    model: m\n    base_url: http://127.0.0.1:9/v1\n"
        "    description: my own model, on my laptop\n"
    )
    capsys.readouterr()
    assert cli.main(["models", "--models-file", str(models)]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("mine "))
    assert lines[at + 1].strip() == "my own model, on my laptop"
    assert any(line.strip().startswith("SmolLM2-135M-Instruct") for line in lines)  # built-ins have theirs
