"""vLLM's OpenAI-compatible server with LoRA adapters: ``python -m serving --model NAME``.

A thin command line over the plugin's :mod:`pytest_llmeval.backends.vllm_process`:
the same :class:`VLLMServer` runs behind the plugin's ``vllm_server`` models.
"""

from __future__ import annotations

from pytest_llmeval.backends.vllm_process import ServerError, VLLMServer

__all__ = ["ServerError", "VLLMServer"]
