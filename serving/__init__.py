"""vLLM's OpenAI-compatible server with LoRA adapters: ``python -m serving --model NAME``.

The same :class:`VLLMServer` runs behind the plugin's ``vllm_server`` models.
"""

from __future__ import annotations

from .server import ServerError, VLLMServer

__all__ = ["ServerError", "VLLMServer"]
