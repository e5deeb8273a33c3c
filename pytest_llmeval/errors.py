"""Exceptions with messages that say what, where and what to do."""

from __future__ import annotations


class LLMEvalError(Exception):
    """Base class of the plugin's user-facing errors."""


class ConfigError(LLMEvalError):
    """A configuration file (models.yaml, a baseline, a rubric) is invalid."""


class DatasetError(LLMEvalError):
    """A dataset file or line is invalid; the message names file:line."""


class TemplateError(LLMEvalError):
    """A prompt template cannot be rendered for a case."""


class ModelUnavailable(LLMEvalError):
    """A selected model cannot run here (missing key, no GPU, missing package)."""


class ModelCallError(LLMEvalError):
    """A model call failed after its retries; the item is an error, not a failure."""

    def __init__(
        self, message: str, *, retries: int = 0, cause: str = "", causes: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.retries = retries
        self.cause = cause
        # The cause of every failed attempt, the last one included (the item's record keeps them).
        self.causes = list(causes) if causes is not None else ([cause] if cause else [])


class BudgetExceeded(LLMEvalError):
    """The cost budget (--max-cost) was reached before this request was sent."""


class PreflightFailed(ModelCallError):
    """A model cannot be reached before its first request (refused, DNS, 401/403, no key): ends the session."""
