"""Training configuration: a YAML file (``finetune/configs/cpu.yaml`` by default) plus overrides.

Settings resolve in one order: dataclass defaults < config file < explicit CLI
flags (``--rank 8``) < ``--set key=value``. Every key is type-checked and an
unknown key names the file (or flag) it came from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import FinetuneError

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "cpu.yaml"

# The attention and MLP projections of Llama-style models: the set vLLM's
# LoRA support accepts. embed_tokens / lm_head stay frozen on purpose.
DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class FinetuneConfig:
    """Everything one training run depends on; stored in full in the adapter metadata."""

    # What to train
    task: str | None = None
    base_model: str = "smollm2"
    output: str | None = None
    train_file: str | None = None  # default: <evals_dir>/<task>/train.jsonl
    prompt_file: str | None = None  # default: <evals_dir>/<task>/prompt.md
    evals_dir: str = "evals"
    models_file: str = "evals/models.yaml"
    # LoRA
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))
    lora_top_layers: int = 0  # > 0: LoRA on the top N decoder layers only (backward stops below them)
    # Quantization of the frozen base (QLoRA)
    load_in_4bit: bool = True
    quant_type: str = "nf4"
    double_quant: bool = False
    compute_dtype: str = "auto"  # bfloat16 where the hardware has it, else float32
    # Optimisation
    learning_rate: float = 2e-4
    epochs: float = 1.0
    max_steps: int = 0  # > 0 overrides epochs
    time_budget_min: float = 0.0  # > 0: stop after this much training time (a cap; the adapter records it)
    fit_schedule_to_budget: bool = (
        False  # the lr schedule also follows the budget (then the run depends on speed)
    )
    batch_size: int = 4
    gradient_accumulation: int = 1
    warmup_steps: int = 10
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_seq_len: int = 1024
    max_examples: int = 0  # > 0 uses only the first N training rows
    group_by_length: bool = True
    share_prefix: bool = True  # run a prompt prefix shared by a batch once (not with gradient_checkpointing)
    gradient_checkpointing: bool = False
    seed: int = 42
    # Bookkeeping
    save_steps: int = 50
    save_total_limit: int = 2
    keep_checkpoints: bool = False
    log_every: int = 10
    device: str = "auto"
    num_threads: int = 0  # 0: torch's default

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serialisable copy."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> FinetuneConfig:
        """A validated copy with some keys changed."""
        cfg = dataclasses.replace(self, **changes)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise :class:`FinetuneError` on values that cannot work."""
        positive = (
            "rank",
            "alpha",
            "batch_size",
            "gradient_accumulation",
            "max_seq_len",
            "save_steps",
            "save_total_limit",
            "log_every",
        )
        for key in positive:
            if getattr(self, key) < 1:
                raise FinetuneError(f"config key '{key}' must be at least 1, got {getattr(self, key)}")
        for key in ("max_steps", "max_examples", "warmup_steps", "num_threads", "lora_top_layers"):
            if getattr(self, key) < 0:
                raise FinetuneError(f"config key '{key}' must be 0 or more, got {getattr(self, key)}")
        if not 0.0 <= self.dropout < 1.0:
            raise FinetuneError(f"config key 'dropout' must be in [0, 1), got {self.dropout}")
        if self.learning_rate <= 0:
            raise FinetuneError(f"config key 'learning_rate' must be positive, got {self.learning_rate}")
        if self.time_budget_min < 0:
            raise FinetuneError(
                f"config key 'time_budget_min' must be 0 (off) or more, got {self.time_budget_min}"
            )
        if self.max_steps == 0 and self.epochs <= 0:
            raise FinetuneError("set 'epochs' (> 0) or 'max_steps' (> 0): the run has no length")
        if self.lr_scheduler not in ("cosine", "linear", "constant"):
            raise FinetuneError(
                f"config key 'lr_scheduler' must be cosine, linear or constant, got {self.lr_scheduler!r}"
            )
        if self.quant_type not in ("nf4", "fp4"):
            raise FinetuneError(f"config key 'quant_type' must be nf4 or fp4, got {self.quant_type!r}")
        if self.compute_dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise FinetuneError(
                f"config key 'compute_dtype' must be auto, float32, bfloat16 or float16, got {self.compute_dtype!r}"
            )
        if self.share_prefix and self.gradient_checkpointing:
            raise FinetuneError(
                "share_prefix needs the key/value cache, which gradient_checkpointing disables; "
                "set one of them to false"
            )
        if not self.target_modules:
            raise FinetuneError("config key 'target_modules' must name at least one module")
        bad = [m for m in self.target_modules if m in ("embed_tokens", "lm_head")]
        if bad:
            raise FinetuneError(
                f"target_modules {bad} are not supported: vLLM rejects adapters that train "
                "embed_tokens/lm_head; use the attention/MLP projections"
            )


_FIELDS = {f.name: f for f in fields(FinetuneConfig)}

# Keys that may differ between an interrupted run and its --resume: they do
# not change what the steps already taken mean.
RESUMABLE_CHANGES = frozenset(
    {
        "max_steps",
        "epochs",
        "time_budget_min",
        "save_steps",
        "save_total_limit",
        "keep_checkpoints",
        "log_every",
        "num_threads",
        "device",
    }
)


def _coerce(key: str, value: Any, where: str) -> Any:
    """Check (and convert from CLI strings) one value against the field's type."""
    if key not in _FIELDS:
        known = ", ".join(sorted(_FIELDS))
        raise FinetuneError(f"{where}: unknown config key '{key}'; known keys: {known}")
    ftype = str(_FIELDS[key].type)
    from_cli = isinstance(value, str) and ftype not in ("str", "str | None")

    def bad(expected: str) -> FinetuneError:
        return FinetuneError(f"{where}: config key '{key}' must be {expected}, got {value!r}")

    if from_cli and ftype != "list[str]":
        parsed = yaml.safe_load(value) if value.strip() else None
        value = parsed
    if ftype == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if ftype == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if ftype == "float":
        if isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads "2e-4" as a string
            except ValueError:
                raise bad("a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if ftype == "str":
        if not isinstance(value, str) or not value.strip():
            raise bad("a non-empty string")
        return value
    if ftype == "str | None":
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none")):
            return None
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if ftype == "list[str]":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings (or a comma-separated string)")
        return value
    raise AssertionError(f"unhandled config type {ftype} for {key}")  # pragma: no cover


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read and check a YAML config file into a dict of known keys."""
    p = Path(path)
    if not p.is_file():
        shipped = (
            ", ".join(sorted(f.name for f in CONFIG_DIR.glob("*.yaml"))) or "none (reinstall the package)"
        )
        raise FinetuneError(
            f"config file {p} does not exist; shipped configs in {CONFIG_DIR}: {shipped}; "
            "or pass --config PATH to your own YAML file"
        )
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise FinetuneError(f"{p}{line}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FinetuneError(f"{p}: expected a mapping of config keys, got {type(data).__name__}")
    return {k: _coerce(k, v, str(p)) for k, v in data.items()}


def parse_set(item: str) -> tuple[str, Any]:
    """``key=value`` from ``--set`` into a checked (key, value) pair."""
    if "=" not in item:
        raise FinetuneError(f"--set {item!r}: expected key=value, e.g. --set warmup_steps=20")
    key, raw = item.split("=", 1)
    key = key.strip().replace("-", "_")
    return key, _coerce(key, raw, f"--set {item}")


def build_config(
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
) -> FinetuneConfig:
    """Defaults < ``config_file`` (default: cpu.yaml) < ``overrides`` < ``sets`` (``key=value`` strings)."""
    values: dict[str, Any] = {}
    # The default file is the default run: a missing one is an error, not a silent fallback to the
    # dataclass defaults (which would train another adapter than the documented one).
    values.update(load_config_file(Path(config_file) if config_file else DEFAULT_CONFIG))
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(key, value, f"--{key.replace('_', '-')}")
    for item in sets or []:
        key, value = parse_set(item)
        values[key] = value
    cfg = FinetuneConfig(**values)
    cfg.validate()
    return cfg


def as_config(config: dict[str, Any] | FinetuneConfig) -> FinetuneConfig:
    """Accept the Python API's dict form as well as a :class:`FinetuneConfig`.

    A dict is laid over the default config file, so ``{"task": ..., "output": ...}``
    trains with the default CPU settings.
    """
    if isinstance(config, FinetuneConfig):
        config.validate()
        return config
    if not isinstance(config, dict):
        raise FinetuneError(f"config must be a dict or FinetuneConfig, got {type(config).__name__}")
    values = dict(config)
    config_file = values.pop("config", None)
    return build_config(config_file, overrides=values)
