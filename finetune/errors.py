"""The one exception type of the finetune package."""

from __future__ import annotations


class FinetuneError(Exception):
    """A user-facing problem (bad input, missing file, unknown model).

    The message is one line that says what is wrong, where, and what to do;
    ``python -m finetune`` prints it and exits with status 2.
    """


class TrainingInterrupted(FinetuneError):
    """Training stopped (Ctrl-C, SIGTERM) after writing a checkpoint; ``--resume`` continues it."""
