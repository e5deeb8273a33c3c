"""Generation progress cooperates with pytest: the file header is printed once, on a terminal and in a log."""

from __future__ import annotations

import re

import pytest

from pytest_llmeval.backends.embedded import cache_root

MODEL_CACHE = cache_root()  # before pytester points HOME elsewhere: the converted model is reused

CASES = [{"id": f"c{i:02d}", "prompt": f"p{i}", "expected": f"p{i}"} for i in range(10)]
CASES[3]["expected"] = "other"  # one F among the dots


def slow_project(eval_project, fake_openai, mode: str, every: float = 0.2):
    """Ten items that each wait for a slow completion (one request in flight at a time)."""
    fake_openai.delay = 0.35
    p = eval_project(CASES, max_concurrency=1)
    ini = p.path.joinpath("tox.ini")
    ini.write_text(
        ini.read_text().rstrip("\n") + f"\nllmeval_progress = {mode}\nllmeval_progress_every = {every}\n"
    )
    return p


def render(raw: str) -> list[str]:
    """What a terminal shows after ``raw``: CR, LF, cursor left (ESC[nD) and erase to end of line (ESC[K)."""
    screen: list[list[str]] = [[]]
    col = 0
    for token in re.findall(r"\x1b\[\d*[A-Za-z]|\r|\n|[^\x1b\r\n]", raw):
        line = screen[-1]
        if token == "\n":
            screen.append([])
            col = 0
        elif token == "\r":
            col = 0
        elif token.startswith("\x1b["):
            n, op = token[2:-1], token[-1]
            if op == "D":
                col = max(0, col - int(n or 1))
            elif op == "K":
                del line[col:]
            # colours (m) move nothing
        else:
            line[col:col] = [] if col < len(line) else [" "] * (col - len(line))
            if col < len(line):
                line[col] = token
            else:
                line.append(token)
            col += 1
    return ["".join(chars) for chars in screen]


def header_lines(lines: list[str]) -> list[str]:
    """pytest's file header: the file's name, then its results (not the summary's ``test_eval.py::``)."""
    return [line for line in lines if re.match(r"test_eval\.py( |$)", line)]


def test_log_progress_lines_never_repeat_the_file_header(eval_project, fake_openai):
    p = slow_project(eval_project, fake_openai, "log")
    result = p.runpytest("--model", "fake", "-p", "no:randomly")
    result.assert_outcomes(passed=9, failed=1)
    lines = result.outlines
    progress = [line for line in lines if line.startswith("[llmeval] generated")]
    assert progress, "\n".join(lines)  # the run waited long enough to say how far it is
    assert len(header_lines(lines)) == 1, "\n".join(lines)
    # The dots go on below the progress lines: all ten results are on screen, in order.
    first = lines.index(header_lines(lines)[0])
    end = next(i for i in range(first, len(lines)) if "[100%]" in lines[i])
    marks = "".join(
        re.sub(r"^test_eval\.py |\s*\[\s*\d+%\]$", "", line)
        for line in lines[first : end + 1]
        if not line.startswith("[llmeval]")
    )
    assert marks == "...F......", "\n".join(lines)


def test_log_progress_waits_its_interval(eval_project, fake_openai):
    p = slow_project(eval_project, fake_openai, "log", every=30)
    result = p.runpytest("--model", "fake", "-p", "no:randomly")
    result.assert_outcomes(passed=9, failed=1)
    assert "[llmeval] generated" not in result.stdout.str()  # a run shorter than the interval prints none


def test_terminal_status_line_is_drawn_in_place_and_erased(eval_project, fake_openai):
    p = slow_project(eval_project, fake_openai, "terminal")
    result = p.runpytest("--model", "fake", "-p", "no:randomly")
    result.assert_outcomes(passed=9, failed=1)
    raw = result.stdout.str()
    assert "[llmeval] generated" in raw and "\x1b[K" in raw  # it was drawn, and erased
    screen = render(raw)
    assert not any("[llmeval] generated" in line for line in screen), "\n".join(screen)
    headers = header_lines(screen)
    assert len(headers) == 1, "\n".join(screen)
    assert re.fullmatch(r"test_eval\.py \.\.\.F\.\.\.\.\.\. +\[100%\]", headers[0]), headers[0]


def test_bad_progress_mode_is_a_usage_error(eval_project, fake_openai):
    p = slow_project(eval_project, fake_openai, "sometimes")
    result = p.runpytest("--model", "fake")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*llmeval_progress: expected one of auto, terminal, log, off, got 'sometimes'*"]
    )


@pytest.mark.slow
def test_model_loading_is_shown_without_dash_s(pytester, monkeypatch):
    """The embedded model's load names itself in the progress, not in an item's captured stderr."""
    monkeypatch.setenv("LLMEVAL_MODEL_CACHE", str(MODEL_CACHE))
    pytester.makefile(".jsonl", cases='{"id": "c1", "prompt": "Say hi"}\n')
    pytester.makeini(
        "[pytest]\nllmeval_cache = off\nllmeval_metrics_db = metrics.db\nllmeval_runs_dir = runs\n"
        "llmeval_progress = log\nllmeval_progress_every = 0.2\n"
    )
    pytester.makepyfile(
        test_eval=(
            "from pytest_llmeval import dataset\n\n"
            "@dataset('cases.jsonl', max_tokens=2)\n"
            "def test_t(case, completion):\n"
            "    assert False, 'show the captured output'\n"
        )
    )
    result = pytester.runpytest("--model", "smollm2", "-p", "no:randomly")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert re.search(r"\[llmeval\] generated 0/1 .* · loading model smollm2 \(\d+s\)", out), out
    assert "Captured stderr" not in out
