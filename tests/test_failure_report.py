"""The failure report of a failed eval item: a few lines by default, the traceback on request."""

from __future__ import annotations

import pytest

CASES = [
    {"id": "ok-1", "prompt": "hello", "expected": "hello"},
    {"id": "bad-1", "prompt": "wrong answer\nsecond line", "expected": "right"},
]

MANY_SCORES = (
    "from pytest_llmeval import dataset, scorers\n\n"
    "@dataset('cases.jsonl', max_tokens=16)\n"
    "def test_echo(case, completion):\n"
    "    with scorers.soft():\n"
    "        scorers.exact_match(completion.text, case['expected'])\n"
    "        scorers.contains(completion.text, ['answer'])\n"
    "        scorers.regex(completion.text, r'^right$')\n"
    "        scorers.key_facts(completion.text, ['right'])\n"
    "        scorers.json_valid(completion.text)\n"
)

PLAIN_ASSERT = (
    "from pytest_llmeval import dataset\n\n"
    "@dataset('cases.jsonl', max_tokens=16)\n"
    "def test_echo(case, completion):\n"
    "    assert completion.text == case['expected']\n"
)


def failure_block(lines: list[str], header: str) -> list[str]:
    """The report of one failed item: its ``___ name ___`` header up to the next section."""
    start = next(i for i, line in enumerate(lines) if line.startswith("_") and header in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(("_", "=")))
    return lines[start:end]


@pytest.mark.parametrize("xdist", [False, True], ids=["in-process", "xdist"])
def test_default_report_is_a_few_lines(eval_project, xdist):
    p = eval_project(CASES)
    result = p.runpytest("--model", "fake", "-p", "no:randomly", *(["-n", "2"] if xdist else []))
    result.assert_outcomes(passed=1, failed=1)
    block = failure_block(result.outlines, "test_echo[fake-bad-1]")
    text = "\n".join(block)
    body = [line for line in block[1:] if not line.startswith("[gw")]  # xdist names the worker
    assert len(body) == 3, text
    assert body[0] == "case bad-1 [fake] · cases.jsonl:2 · 1 of 1 score failed"
    assert body[1].startswith("  exact_match = 0.000 (needs >= 1): expected 'right', got 'wrong answer")
    assert body[2] == "  output: wrong answer\\nsecond line"  # one line, its newline made visible
    for noise in ("Case(", "Completion(", "contextlib", "def test_echo", "ScoreFailure"):
        assert noise not in result.stdout.str(), noise
    # The short summary quotes the failing score, not the exception's class.
    result.stdout.fnmatch_lines(["FAILED test_eval.py::test_echo[[]fake-bad-1[]] - exact_match = 0.000*"])


def test_many_failing_scores_fit_in_six_lines(eval_project):
    p = eval_project(CASES[1:], MANY_SCORES)
    result = p.runpytest("--model", "fake", "-p", "no:randomly")
    result.assert_outcomes(failed=1)
    block = failure_block(result.outlines, "test_echo[fake-bad-1]")
    assert len(block) <= 6, "\n".join(block)
    assert block[1].startswith("case bad-1 [fake]") and "4 of 5 scores failed" in block[1]
    assert block[2].startswith("  exact_match = 0.000 (needs >= 1): expected 'right'")
    assert block[4].startswith("  +2 more: key_facts = 0.000 (needs >= 1), json_valid = 0.000 (needs >= 1)")
    assert block[5].startswith("  output: wrong answer")


@pytest.mark.parametrize("flag", ["--tb=long", "-vv"])
def test_traceback_on_request(eval_project, flag):
    p = eval_project(CASES)
    result = p.runpytest("--model", "fake", "-p", "no:randomly", flag)
    result.assert_outcomes(passed=1, failed=1)
    block = "\n".join(failure_block(result.outlines, "test_echo[fake-bad-1]"))
    assert "def test_echo(case, completion):" in block  # the test's source, as pytest shows it
    assert "ScoreFailure" in block and "case bad-1 [fake]" not in block


def test_a_plain_assertion_keeps_pytests_report(eval_project):
    p = eval_project(CASES, PLAIN_ASSERT)
    result = p.runpytest("--model", "fake", "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    block = "\n".join(failure_block(result.outlines, "test_echo[fake-bad-1]"))
    assert ">       assert completion.text == case['expected']" in block
    assert "E       AssertionError" in block
    assert "case bad-1 [fake]" not in block


def test_hostile_output_stays_on_its_line(eval_project, fake_openai):
    fake_openai.responder = lambda messages, body: "\x1b[2J\x1b[31mboom\rsk-abcdefghijklmnop"
    p = eval_project(CASES[1:])
    result = p.runpytest("--model", "fake", "-p", "no:randomly")
    result.assert_outcomes(failed=1)
    block = failure_block(result.outlines, "test_echo[fake-bad-1]")
    out = [line for line in block if line.startswith("  output: ")]
    assert len(out) == 1 and "\x1b" not in out[0] and "\r" not in out[0]
    assert "sk-abcdefghijklmnop" not in result.stdout.str()
