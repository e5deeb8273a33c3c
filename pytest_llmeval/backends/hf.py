"""In-process transformers backend, with an optional PEFT adapter and optional 4-bit loading."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..errors import ModelCallError
from ..model_checks import (
    adapter_identity,
    check_adapter,
    check_extra,
    check_local_weights,
    path_fingerprint,
)
from ..models import ModelSpec
from .base import Backend, Completion, Request
from .embedded import resolve_model_path
from .hf_prefill import (  # noqa: F401  (re-exported: the shared-prefix prefill moved there)
    _plain_kv_layers,
    prefill_prompts,
    prefilled_cache,
)

# One generate at a time per device: two in-process models generating at once (one lane
# each) would only oversubscribe the same cores or GPU (torch already uses every core for
# one batch). Their lanes take turns, batch by batch, instead.
_DEVICE_LOCKS: dict[str, threading.Lock] = {}
_DEVICE_LOCKS_GUARD = threading.Lock()
# transformers resolves its lazy top-level names on first access, and two lanes doing that
# at once in threads failed with "cannot import name 'AutoModelForCausalLM'". Loads go one
# at a time (they contend for memory bandwidth anyway).
_LOAD_LOCK = threading.RLock()
# The attention used on CPU: SDPA with grouped-query heads broadcast by torch. transformers'
# own "sdpa" copies every KV head ``num_key_value_groups`` times on each decode step when a
# padding mask is present, and that copy was 56% of a decode step (SmolLM2, batch 32).
CPU_ATTENTION = "llmeval_sdpa_gqa"


@dataclass
class HFSpec(ModelSpec):
    """``type: hf``: a transformers model in this process, optionally 4-bit, optionally with a PEFT adapter."""

    path: str = ""  # embedded:NAME, a local directory or a hub id already in the Hugging Face cache
    adapter: str | None = None
    load_in_4bit: bool = False
    dtype: str = "float32"
    device: str | None = None
    batch_size: int = 16

    REQUIRED: ClassVar[tuple[str, ...]] = ("path",)

    def weights(self) -> str | None:
        return self.path

    def adapter_path(self) -> str | None:
        return self.adapter

    def identity(self) -> str:
        # The key set and order are those of every cache entry written so far: keep them.
        ident: dict[str, Any] = {"type": self.type, "path": self.path, "model": None}
        ident["path_fp"] = path_fingerprint(self.path)
        ident["load_in_4bit"] = self.load_in_4bit
        ident["dtype"] = self.dtype
        if self.adapter:
            ident["adapter"] = adapter_identity(self.adapter)
        return json.dumps(ident, sort_keys=True)

    def check_available(self) -> None:
        super().check_available()
        modules = ("torch", "transformers", "safetensors", "accelerate")
        modules += ("peft",) if self.adapter else ()
        modules += ("bitsandbytes",) if self.load_in_4bit else ()
        modules += ("gguf",) if self.path.startswith("embedded:") else ()
        check_extra("hf", modules)
        check_local_weights(self.path)
        check_adapter(self.adapter)


def device_lock(device: str) -> threading.Lock:
    """The lock that serialises generation on ``device`` across this process's hf models."""
    with _DEVICE_LOCKS_GUARD:
        return _DEVICE_LOCKS.setdefault(device, threading.Lock())


class HFBackend(Backend):
    """A transformers causal LM generating batches with left padding (greedy by default)."""

    mode = "batch"
    latency_is_per_request = False  # each item gets its time to last token in extra (timing.py)

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.model: Any = None
        self.tokenizer: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load once; the session's status line says so meanwhile (the first run's wait has a name)."""
        if self.model is not None:
            return
        from ..progress import announce, bars_to_status

        topic, label = f"load:{self.name}", f"loading model {self.name}"
        announce(topic, label, echo=False)
        try:
            # One load at a time (the lock is reentrant: _load_weights takes it too), since the
            # bars' hook is transformers' global.
            with _LOAD_LOCK, bars_to_status(topic, label):
                self._load_weights()
        finally:
            announce(topic, None)

    def _load_weights(self) -> None:
        with _LOAD_LOCK, self._lock:
            if self.model is not None:
                return
            import torch
            from transformers import (  # noqa: F401  (resolved here, under the lock)
                AutoModelForCausalLM,
                AutoTokenizer,
                StoppingCriteria,
                StoppingCriteriaList,
            )

            path = resolve_model_path(self.spec.path)
            kwargs: dict[str, Any] = {}
            dtype = getattr(torch, self.spec.dtype, None)
            if dtype is None:
                raise ModelCallError(f"model {self.name}: unknown dtype {self.spec.dtype!r}")
            kwargs["dtype"] = dtype
            if self.spec.load_in_4bit:
                from transformers import BitsAndBytesConfig

                kwargs["quantization_config"] = BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
                )
            tok = AutoTokenizer.from_pretrained(path)
            tok.padding_side = "left"
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
            if self.spec.adapter:
                model = self._load_adapter(model, path)
                if not self.spec.load_in_4bit:
                    # Folding B·A into the weights makes the adapter cost nothing per token
                    # (unmerged LoRA ran at about half the base model's speed on a CPU).
                    model = model.merge_and_unload()
            device = self.spec.device or ("cuda" if torch.cuda.is_available() else "cpu")
            if not self.spec.load_in_4bit:
                model = model.to(device)
            use_cpu_attention(model, device)
            model.eval()
            self.device = device
            self.tokenizer, self.model = tok, model

    def _load_adapter(self, model: Any, base_path: str) -> Any:
        from peft import PeftModel

        adapter = Path(self.spec.adapter)
        if not (adapter / "adapter_config.json").is_file():
            raise ModelCallError(
                f"model {self.name}: adapter {adapter} has no adapter_config.json; "
                "train one with 'python -m finetune' or fix 'adapter:' in models.yaml"
            )
        mismatch = _adapter_base_mismatch(adapter, self.spec.path)
        if mismatch:
            raise ModelCallError(f"model {self.name}: {mismatch}")
        return PeftModel.from_pretrained(model, str(adapter))

    def _prompt_ids(self, request: Request) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            request.message_list, add_generation_prompt=True, tokenize=True
        )
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def generate_batch(self, requests: list[Request], cancelled: Any = None) -> list[Completion]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        self.load()
        params = requests[0].param_dict
        max_new = int(params.get("max_tokens", self.spec.params.get("max_tokens", 256)))
        temperature = float(params.get("temperature", self.spec.params.get("temperature", 0.0)))
        stops = params.get("stop") or []
        prompts = [self._prompt_ids(r) for r in requests]
        pad = self.tokenizer.pad_token_id

        steps: list[float] = []  # when each decoding step ended (criteria run once per new token)

        class _Cancel(StoppingCriteria):
            def __call__(self, *_: Any, **__: Any) -> bool:
                steps.append(time.perf_counter())
                return bool(cancelled is not None and cancelled.is_set())

        gen_kwargs: dict[str, Any] = {"stopping_criteria": StoppingCriteriaList([_Cancel()])}
        if temperature > 0:
            gen_kwargs.update(do_sample=True, temperature=temperature, top_p=float(params.get("top_p", 1.0)))
            if "seed" in params:
                torch.manual_seed(int(params["seed"]))
        with device_lock(str(self.device)):
            started = time.perf_counter()  # latency is the generation's, not the wait for the device
            generated = generate_tokens(self.model, prompts, pad, max_new, self.device, **gen_kwargs)
            elapsed = time.perf_counter() - started
        if cancelled is not None and cancelled.is_set():
            raise ModelCallError("generation cancelled")
        eos = self.tokenizer.eos_token_id
        results = []
        for p, new in zip(prompts, generated, strict=True):
            finish = "length"
            if eos in new:
                new = new[: new.index(eos)]
                finish = "stop"
                last_step = len(new)  # the step that produced the end-of-sequence token
            while new and new[-1] == pad:
                new.pop()
            if finish == "length":
                last_step = max(0, len(new) - 1)
            # The item's own figure: from the batch's start to its last token (a batch shares its wall time).
            done_at = steps[min(last_step, len(steps) - 1)] if steps else started + elapsed
            ttlt = max(0.0, done_at - started)
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            for s in stops:
                if s and s in text:
                    text = text[: text.index(s)]
                    finish = "stop"
            results.append(
                Completion(
                    text=text,
                    latency_s=ttlt,
                    prompt_tokens=len(p),
                    completion_tokens=len(new),
                    cost=self.spec.cost(len(p), len(new)),
                    finish_reason=finish,
                    model=self.name,
                    extra={
                        "batch_size": len(requests),
                        "time_to_last_token_s": round(ttlt, 6),
                        "s_per_token": round(ttlt / (last_step + 1), 6),
                    },
                )
            )
        return results


def use_cpu_attention(model: Any, device: Any) -> None:
    """On CPU, switch a model using transformers' ``sdpa`` to the grouped-query SDPA."""
    if str(device) == "cpu" and getattr(model.config, "_attn_implementation", None) == "sdpa":
        model.set_attn_implementation(_register_cpu_attention())


def generate_tokens(
    model: Any,
    prompts: list[list[int]],
    pad_token_id: int,
    max_new_tokens: int,
    device: Any = "cpu",
    **gen_kwargs: Any,
) -> list[list[int]]:
    """New token ids for each prompt, generated as one left-padded batch (greedy unless told).

    Where every layer keeps a plain key/value cache, the shared prompt prefixes are
    computed once and decoding writes into a preallocated cache (``prefilled_cache``);
    other architectures go through plain ``generate``. Tokens after the last real one
    are ``pad_token_id``.
    """
    import torch

    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad_token_id] * (width - len(p)) + p for p in prompts], device=device)
    attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": pad_token_id, **gen_kwargs}
    if not kwargs.get("do_sample"):
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    with torch.inference_mode():
        if _plain_kv_layers(model):
            kwargs["past_key_values"] = prefilled_cache(model, prompts, max_new_tokens)
            kwargs["disable_compile"] = True  # a static cache would trigger compilation on a GPU
        out = model.generate(input_ids=input_ids, attention_mask=attn, **kwargs)
    return [out[i, width:].tolist() for i in range(len(prompts))]


def _register_cpu_attention() -> str:
    """Register (once) and name the grouped-query SDPA attention used on CPU."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if CPU_ATTENTION not in AttentionInterface():
        AttentionInterface.register(CPU_ATTENTION, _sdpa_gqa)
        AttentionMaskInterface.register(CPU_ATTENTION, sdpa_mask)
    return CPU_ATTENTION


def _sdpa_gqa(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **_: Any,
) -> tuple[Any, None]:
    """transformers' SDPA attention, with KV heads broadcast (``enable_gqa``) instead of copied."""
    import torch.nn.functional as F

    # As in transformers: without a mask, a multi-token query is causal (prompt pass).
    causal = query.shape[2] > 1 and attention_mask is None
    out = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout if module.training else 0.0,
        scale=scaling,
        is_causal=causal,
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


def _adapter_base_mismatch(adapter: Path, base_ref: str) -> str | None:
    """A readable error if the adapter's recorded base model differs from ``base_ref``."""
    import json

    meta_file = adapter / "llmeval_adapter.json"
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text())
    except ValueError:
        return None
    trained_on = meta.get("base_model")
    if trained_on and trained_on != base_ref:
        return (
            f"adapter {adapter} was trained for base model {trained_on!r}, not {base_ref!r}; "
            "use the matching base model or retrain the adapter"
        )
    return None
