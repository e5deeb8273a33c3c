"""The Markdown summary for a pull request, read back with a Markdown parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _fake_openai import RUN_ARGS, FakeOpenAIServer, answer, write_suite, wrong_for
from markdown_it import MarkdownIt

from pytest_llmeval import cli
from pytest_llmeval.ci_summary import MAX_FLIPS


def parse(text: str) -> dict:
    """Headings, tables (rows of cell texts as rendered) and whether any raw HTML got through."""
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    doc: dict = {"headings": [], "tables": [], "paragraphs": [], "html": []}
    row: list[str] | None = None
    kind = None
    for t in tokens:
        if t.type in ("html_block", "html_inline"):
            doc["html"].append(t.content)
        if t.type == "heading_open":
            kind = "heading"
        elif t.type == "paragraph_open" and row is None:
            kind = "paragraph"
        elif t.type == "table_open":
            doc["tables"].append([])
        elif t.type == "tr_open":
            row = []
        elif t.type == "tr_close":
            doc["tables"][-1].append(row)
            row = None
        elif t.type == "inline":
            doc["html"] += [c.content for c in t.children or [] if c.type == "html_inline"]
            text = "".join(c.content for c in t.children or [] if c.type in ("text", "code_inline"))
            if row is not None:
                row.append(text)
            elif kind == "heading":
                doc["headings"].append(text)
            elif kind == "paragraph":
                doc["paragraphs"].append(text)
    return doc


def table_after(doc: dict, heading_start: str, text: str) -> list[list[str]]:
    """The rows (header first) of the table under the heading that starts with ``heading_start``."""
    titles = [h for h in doc["headings"] if h.startswith(("Results", "Gate", "Cases"))]
    index = next(i for i, h in enumerate(titles) if h.startswith(heading_start))
    assert len(doc["tables"]) > index, text
    return doc["tables"][index]


@pytest.fixture
def suite(pytester: pytest.Pytester):
    """A 40-case suite on the fake server, with a baseline saved from a run where every case passes."""
    cases = [(f"c{i:02d}", f"w{i}") for i in range(40)]
    with FakeOpenAIServer() as srv:
        write_suite(pytester.path, srv.base_url, cases)
        r = pytester.runpytest(*RUN_ARGS, "--save-baseline", "baseline.json", "-p", "no:randomly")
        assert r.ret == 0
        yield pytester, srv, cases


def test_summary_of_a_regression(suite, monkeypatch):
    p, srv, cases = suite
    step_summary = p.path / "step_summary.md"
    step_summary.write_text("## an earlier step's part\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    srv.responder = wrong_for(*[w for _, w in cases[:35]])  # 35 of 40 cases now fail
    r = p.runpytest(
        *RUN_ARGS, "--baseline", "baseline.json", "--llmeval-summary", "out/summary.md", "-p", "no:randomly"
    )
    assert r.ret == 1
    text = (p.path / "out" / "summary.md").read_text()
    doc = parse(text)
    assert doc["headings"][0] == "LLM evals: gate FAILED ❌"
    assert any("pass_rate" in para for para in doc["paragraphs"])  # the reason the gate failed

    results = table_after(doc, "Results", text)
    assert results[0][:4] == ["test", "model", "n", "pass rate"]
    assert results[1][:7] == ["test_evals.py::test_answer", "fake", "40", "12.5%", "5", "35", "0"]
    assert results[1][8].startswith("latency p95 ")  # a server: its request latency, by that name

    gate = table_after(doc, "Gate", text)
    assert "detectable change" in gate[0]
    row = dict(zip(gate[0], gate[1], strict=True))
    assert row["test [model]"] == "test_answer [fake]" and row["metric"] == "pass_rate"
    assert (row["baseline"], row["current"]) == ("1.000", "0.125")
    assert float(row["detectable change"]) > 0 and row["verdict"].startswith("FAIL")

    flips_heading = next(h for h in doc["headings"] if h.startswith("Cases that flipped"))
    assert "35 now fail, 0 now pass" in flips_heading
    flips = table_after(doc, "Cases", text)
    assert len(flips) - 1 == MAX_FLIPS  # a screenful
    assert [r[1] for r in flips[1:]] == [cid for cid, _ in cases[:MAX_FLIPS]]
    assert all(r[2] == "pass → fail" and r[4] == "nope" for r in flips[1:])
    assert "…and 5 more (the run's HTML report lists every case)." in doc["paragraphs"]

    # GitHub's file: the earlier step's part kept, this run's appended.
    both = step_summary.read_text()
    assert both.startswith("## an earlier step's part\n") and both.endswith(text)


def test_hostile_outputs_stay_text_in_their_cells(suite):
    p, srv, cases = suite
    hostile = "<script>alert(1)</script> | <img src=x onerror=alert(2)> **bold** [x](javascript:alert(3))"
    srv.responder = answer(lambda prompt: hostile if prompt == "w3" else prompt)
    r = p.runpytest(
        *RUN_ARGS, "--baseline", "baseline.json", "--llmeval-summary", "s.md", "--gate-mode", "strict"
    )
    assert r.ret == 1
    text = (p.path / "s.md").read_text()
    doc = parse(text)
    assert doc["html"] == []  # nothing from the output became HTML
    flips = table_after(doc, "Cases", text)
    assert len(flips) == 2 and len(flips[1]) == len(flips[0])  # the pipe did not split the row
    assert flips[1][1] == "c03" and flips[1][4].startswith("<script>alert(1)</script> | <img src=x")
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    links = [c for t in tokens for c in t.children or [] if c.type == "link_open"]
    assert links == []  # the output's [x](javascript:...) is text, not a link
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_no_summary_without_eval_items(pytester, monkeypatch):
    step_summary = pytester.path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    pytester.makepyfile("def test_plain():\n    assert True\n")
    r = pytester.runpytest("--llmeval-summary", "s.md")
    assert r.ret == 0
    assert not step_summary.exists() and not (pytester.path / "s.md").exists()


def test_merge_writes_the_summary(pytester, monkeypatch):
    cases = [(f"c{i:02d}", f"w{i}") for i in range(12)]
    with FakeOpenAIServer() as srv:
        write_suite(pytester.path, srv.base_url, cases)
        assert pytester.runpytest(*RUN_ARGS, "--save-baseline", "baseline.json").ret == 0
        srv.responder = wrong_for("w1", "w2")
        for k in (1, 2):
            assert pytester.runpytest(*RUN_ARGS, "--shard", f"{k}/2", "--output", f"runs/s{k}").ret == 0
    step_summary = pytester.path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    monkeypatch.chdir(pytester.path)
    status = cli.main(
        ["merge", "runs/s1", "runs/s2", "--output", "runs/merged", "--baseline", "baseline.json"]
        + ["--gate-mode", "strict", "--summary", "merged.md"]
    )
    assert status == 1
    text = Path("merged.md").read_text()
    assert step_summary.read_text() == text
    doc = parse(text)
    assert doc["headings"][0] == "LLM evals (merged shards): gate FAILED ❌"
    flips = table_after(doc, "Cases", text)
    assert [r[1] for r in flips[1:]] == ["c01", "c02"]
    summary = json.loads(Path("runs/merged/summary.json").read_text())
    assert summary["verdict"]["passed"] is False
