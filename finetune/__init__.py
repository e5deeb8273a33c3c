"""QLoRA finetuning of a base model on an eval task, for pytest-llmeval.

    python -m finetune --task json_extraction --base-model smollm2 --output data/lora_adapters/json_v1

The Python API is what the plugin uses:

- :func:`train` runs a training and returns the adapter directory;
- :func:`adapter_metadata` reads an adapter's ``llmeval_adapter.json``;
- :func:`check_adapter_base` says (as a readable message) when an adapter
  was trained on another base model than the one about to load it.

Heavy libraries (torch, transformers, peft) are imported only when training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .adapter import METADATA_FILE, adapter_metadata, check_adapter_base
from .config import FinetuneConfig, build_config
from .errors import FinetuneError, TrainingInterrupted

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "METADATA_FILE",
    "FinetuneConfig",
    "FinetuneError",
    "TrainingInterrupted",
    "adapter_metadata",
    "build_config",
    "check_adapter_base",
    "train",
]


def train(config: dict[str, Any] | FinetuneConfig, *, resume: bool = False, **kwargs: Any) -> Path:
    """Train a LoRA adapter and return its directory; see :func:`finetune.trainer.train`."""
    from .trainer import train as _train

    return _train(config, resume=resume, **kwargs)
