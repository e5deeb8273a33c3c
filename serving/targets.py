"""What ``--model`` names: a models.yaml entry, ``embedded:NAME``, a directory or a hub id."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pytest_llmeval.backends.embedded import resolve_weights
from pytest_llmeval.backends.vllm_process import ServerError
from pytest_llmeval.backends.vllm_server import VLLMServerSpec

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
        base = spec.weights()
        assert base is not None
        if isinstance(spec, VLLMServerSpec):
            return Target(
                resolve_weights(base),
                base,
                dict(spec.adapters),
                list(spec.server_args),
                spec.port,
                spec.startup_timeout,
            )
        adapter = spec.adapter_path()  # an hf entry: its adapter is served under the entry's name
        return Target(resolve_weights(base), base, {ref: adapter} if adapter else {})
    if Path(ref).is_dir():
        return Target(str(Path(ref).resolve()), ref)
    if "/" in ref and not ref.startswith((".", "/")):
        return Target(ref, ref)
    names = ", ".join(sorted(specs)) or f"none ({models_file} not found)"
    raise ServerError(
        f"--model {ref!r} is not a model in {models_file} (names: {names}), not embedded:NAME, "
        "not a local directory and not a hub id (org/name)"
    )
