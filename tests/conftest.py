"""Shared fixtures for the plugin's own tests."""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy  # noqa: F401  (imported once here: pytester's in-process runs must not re-import it)
import pytest
import torch  # noqa: F401  (same: an inner run that imported it would leave a half-removed copy)

# Same for the HTTP stacks (httpx/httpcore for vLLM's health checks, httpx2/httpcore2 under the
# openai SDK): httpx maps the httpcore exception classes it met first into its own; an inner run
# that imported httpcore afresh then raised a second copy's ConnectError, which escaped unmapped
# (a raw httpcore.ConnectError from wait_ready, a replica fail-over that never happened).
for _name in ("httpcore", "httpx", "httpcore2", "httpx2", "openai"):
    with contextlib.suppress(ImportError):
        importlib.import_module(_name)

sys.path.insert(0, str(Path(__file__).parent))

from fakes import FakeOpenAIServer, models_yaml  # noqa: E402

pytest_plugins = ["pytester"]


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    """An OpenAI-compatible server on loopback that echoes the last user message."""
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
def eval_project(pytester: pytest.Pytester, fake_openai: FakeOpenAIServer):
    """A pytester project wired to the fake server: models.yaml, cases.jsonl and an ini."""

    def make(
        cases: list[dict], test_body: str | None = None, names: tuple[str, ...] = ("fake",), **model_extra
    ):
        import json

        pytester.makefile(".yaml", models=models_yaml(fake_openai.base_url, names, **model_extra))
        pytester.path.joinpath("cases.jsonl").write_text("\n".join(json.dumps(c) for c in cases) + "\n")
        pytester.makeini(
            "[pytest]\nllmeval_models_file = models.yaml\nllmeval_cache = off\n"
            "llmeval_metrics_db = metrics.db\nllmeval_runs_dir = runs\n"
        )
        pytester.makepyfile(
            test_eval=test_body
            or (
                "from pytest_llmeval import dataset, scorers\n\n"
                "@dataset('cases.jsonl', max_tokens=16)\n"
                "def test_echo(case, completion):\n"
                "    scorers.exact_match(completion.text, case['expected'])\n"
            )
        )
        return pytester

    return make
