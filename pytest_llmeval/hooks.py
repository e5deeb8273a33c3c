"""Hook specifications other plugins can implement."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec
def pytest_llmeval_register_backends() -> dict[str, Any]:
    """Return ``{type_name: factory}``; ``factory(spec)`` builds a Backend for models of that type.

    Factories should import heavy modules inside the call, so that merely
    installing a backend plugin costs nothing until one of its models runs.
    Results of all implementations are merged; later ones win.
    """
    return {}


@pytest.hookspec(firstresult=True)
def pytest_llmeval_judge_model(config: pytest.Config) -> str | None:
    """Return the models.yaml name of the judge model, or None to leave the choice to the default.

    Consulted only when neither ``--judge`` nor the ``llmeval_judge`` ini key names one;
    the default after it is gpt-4o-mini when its API key is set, else smollm2.
    """
    return None
