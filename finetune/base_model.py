"""Resolve ``--base-model`` to weights on this machine, without ever downloading.

Accepted forms, in the order they are tried:

1. a model name from models.yaml (``smollm2``): its ``path`` (hf) or ``model`` (vllm_server);
2. ``embedded:NAME``: the converted embedded model;
3. a local directory with a ``config.json``;
4. a Hugging Face hub id (``org/name``), only if it is already in the local HF cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import FinetuneError


@dataclass(frozen=True)
class BaseModel:
    """A base model resolved to a local directory."""

    arg: str  # what the user typed
    reference: str  # what models.yaml / the hf backend calls it (embedded:smollm2, a path, a hub id)
    path: str  # local directory holding config.json and the weights
    fingerprint: str  # pytest_llmeval.backends.embedded.model_fingerprint(reference)


def _from_models_file(name: str, models_file: str) -> str | None:
    p = Path(models_file)
    from pytest_llmeval.errors import ConfigError
    from pytest_llmeval.models import known_models

    try:
        specs = known_models(p)  # the built-in models (smollm2, gpt-4o-mini), then the file's
    except ConfigError as e:
        raise FinetuneError(f"cannot read the model names in {p}: {e}") from None
    spec = specs.get(name)
    if spec is None:
        return None
    if spec.type == "hf":
        return spec.path
    if spec.type == "vllm_server":
        return spec.model
    raise FinetuneError(
        f"model '{name}' in {p} is of type {spec.type}: its weights are not on this machine, so it cannot be "
        "finetuned; pass an hf model name, embedded:smollm2, a local directory or a cached hub id"
    )


def _hub_cached(repo_id: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id, local_files_only=True)
    except Exception:
        return None


def resolve_base_model(arg: str, models_file: str = "evals/models.yaml") -> BaseModel:
    """Map a ``--base-model`` argument to a :class:`BaseModel`, or raise :class:`FinetuneError`."""
    from pytest_llmeval.backends.embedded import (
        EmbeddedModelError,
        is_embedded,
        model_fingerprint,
        resolve_model_path,
    )

    reference = _from_models_file(arg, models_file) or arg
    if is_embedded(reference):
        try:
            path = resolve_model_path(reference)
            return BaseModel(arg, reference, path, model_fingerprint(reference))
        except EmbeddedModelError as e:
            raise FinetuneError(f"base model {arg!r}: {e}") from None
    local = Path(reference).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise FinetuneError(
                f"base model {arg!r}: directory {local} has no config.json; pass a transformers model directory"
            )
        return BaseModel(arg, reference, str(local), model_fingerprint(reference))
    looks_like_hub_id = reference.count("/") == 1 and not reference.startswith((".", "/", "~"))
    if looks_like_hub_id:
        cached = _hub_cached(reference)
        if cached:
            return BaseModel(arg, reference, cached, model_fingerprint(reference))
        raise FinetuneError(
            f"base model {arg!r}: {reference} is not in the local Hugging Face cache and nothing is downloaded "
            f"here; fetch it first (huggingface-cli download {reference}) or pass a local directory"
        )
    from pytest_llmeval.models import known_models

    names = f" ({', '.join(sorted(known_models(models_file)))})"
    raise FinetuneError(
        f"base model {arg!r} not found: it is not a built-in model or one in {models_file}{names}, "
        "not embedded:NAME, "
        "not a local directory and not a hub id (org/name)"
    )
