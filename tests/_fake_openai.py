"""Eval suites wired to the fake OpenAI server of ``tests/fakes.py`` (store, export and tracing tests).

A case is ``(id, word)``: the prompt is the word and the expected answer is the
word, so the fake's default echo passes every case and a responder made with
:func:`answer` decides which fail.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fakes import FakeOpenAIServer, models_yaml

__all__ = ["EVAL_TEST", "RUN_ARGS", "FakeOpenAIServer", "answer", "wrong_for", "write_suite"]

EVAL_TEST = """\
from pytest_llmeval import dataset, scorers


@dataset("cases.jsonl", max_tokens=16)
def test_answer(case, completion):
    scorers.exact_match(completion.text, case["expected"])
"""
# Run the suite against the fake, without the response cache.
RUN_ARGS = ["--model", "fake", "--models-file", "models.yaml", "--cache", "off", "-p", "no:cacheprovider"]


def write_suite(root: str | Path, base_url: str, cases: list[tuple[str, str]], **model_extra: Any) -> None:
    """pytest.ini, models.yaml (model ``fake``), cases.jsonl and test_evals.py in ``root``."""
    root = Path(root)
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "models.yaml").write_text(models_yaml(base_url, ("fake",), **model_extra))
    (root / "cases.jsonl").write_text(
        "".join(json.dumps({"id": cid, "prompt": word, "expected": word}) + "\n" for cid, word in cases)
    )
    (root / "test_evals.py").write_text(EVAL_TEST)


def answer(fn: Callable[[str], str]) -> Callable[[list[dict[str, Any]], dict[str, Any]], str]:
    """A responder for the fake from a function of the last user message."""
    return lambda messages, body: fn(str(messages[-1]["content"]))


def wrong_for(*words: str) -> Callable[[list[dict[str, Any]], dict[str, Any]], str]:
    """A responder that answers "nope" to the given words and echoes the rest."""
    return answer(lambda prompt: "nope" if prompt in words else prompt)
