"""pytest-llmeval: LLM evaluations as pytest tests."""

from __future__ import annotations

__version__ = "0.1.0"

from . import scorers
from .dataset import Case, dataset, load_cases
from .judge_stage import JudgeSpec
from .prompts import load_template

__all__ = ["Case", "JudgeSpec", "__version__", "dataset", "load_cases", "load_template", "scorers"]
