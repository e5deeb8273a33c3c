"""What ``--model`` names: a models.yaml entry, ``embedded:NAME``, a directory or a hub id."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .server import ServerError

DEFAULT_MODELS_FILE = "evals/models.yaml"


@dataclass
class Target:
    """What to serve: a resolved model path, its served name, adapters and defaults."""

    model_path: str
    served_name: str
    adapters: dict[str, str] = field(default_factory=dict)
    server_args: list[str] = field(default_factory=list)
    port: int | None = None
    startup_timeout: float = 600.0


def resolve_weights(ref: str) -> str:
    from pytest_llmeval.backends.embedded import is_embedded, resolve_model_path

    if is_embedded(ref):
        return resolve_model_path(ref)
    if Path(ref).is_dir():
        return str(Path(ref).resolve())
    return ref  # a hub id: vLLM loads it from the Hugging Face cache (or downloads it)


def resolve_target(ref: str, models_file: str | Path = DEFAULT_MODELS_FILE) -> Target:
    """Map ``--model`` to a :class:`Target`; a clear :class:`ServerError` if it names nothing."""
    from pytest_llmeval.backends.embedded import is_embedded
    from pytest_llmeval.errors import LLMEvalError
    from pytest_llmeval.models import load_models

    if is_embedded(ref):
        try:
            return Target(resolve_weights(ref), ref)
        except Exception as e:
            raise ServerError(f"--model {ref}: {e}") from None
    specs = {}
    if Path(models_file).is_file():
        try:
            specs = load_models(models_file)
        except LLMEvalError as e:
            raise ServerError(str(e)) from None
    if ref in specs:
        spec = specs[ref]
        if spec.type == "openai":
            raise ServerError(
                f"--model {ref}: {models_file} says it is an OpenAI API model; nothing to serve"
            )
        base = spec.model if spec.type == "vllm_server" else spec.path
        assert base is not None
        adapters = dict(spec.adapters)
        if spec.type == "hf" and spec.adapter:
            adapters[ref] = spec.adapter
        return Target(
            resolve_weights(base),
            base,
            adapters,
            list(spec.server_args),
            spec.port,
            spec.startup_timeout,
        )
    if Path(ref).is_dir():
        return Target(str(Path(ref).resolve()), ref)
    if "/" in ref and not ref.startswith((".", "/")):
        return Target(ref, ref)
    names = ", ".join(sorted(specs)) or f"none ({models_file} not found)"
    raise ServerError(
        f"--model {ref!r} is not a model in {models_file} (names: {names}), not embedded:NAME, "
        "not a local directory and not a hub id (org/name)"
    )
