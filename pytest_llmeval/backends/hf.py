"""In-process transformers backend, with an optional PEFT adapter and optional 4-bit loading."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from ..errors import ModelCallError
from .base import Backend, Completion, Request
from .embedded import resolve_model_path

# One generate at a time per device: two in-process models generating at once (one lane
# each) would only oversubscribe the same cores or GPU (torch already uses every core for
# one batch). Their lanes take turns, batch by batch, instead.
_DEVICE_LOCKS: dict[str, threading.Lock] = {}
_DEVICE_LOCKS_GUARD = threading.Lock()
# transformers resolves its lazy top-level names on first access, and two lanes doing that
# at once in threads failed with "cannot import name 'AutoModelForCausalLM'". Loads go one
# at a time (they contend for memory bandwidth anyway).
_LOAD_LOCK = threading.Lock()


def device_lock(device: str) -> threading.Lock:
    """The lock that serialises generation on ``device`` across this process's hf models."""
    with _DEVICE_LOCKS_GUARD:
        return _DEVICE_LOCKS.setdefault(device, threading.Lock())


class HFBackend(Backend):
    """A transformers causal LM generating batches with left padding (greedy by default)."""

    mode = "batch"

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.model: Any = None
        self.tokenizer: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
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
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)

        class _Cancel(StoppingCriteria):
            def __call__(self, *_: Any, **__: Any) -> bool:
                return bool(cancelled is not None and cancelled.is_set())

        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": max_new,
            "pad_token_id": pad,
            "stopping_criteria": StoppingCriteriaList([_Cancel()]),
        }
        if temperature > 0:
            gen_kwargs.update(do_sample=True, temperature=temperature, top_p=float(params.get("top_p", 1.0)))
            if "seed" in params:
                torch.manual_seed(int(params["seed"]))
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with device_lock(str(self.device)):
            started = time.perf_counter()  # latency is the generation's, not the wait for the device
            with torch.inference_mode():
                out = self.model.generate(input_ids=input_ids, attention_mask=attn, **gen_kwargs)
            elapsed = time.perf_counter() - started
        if cancelled is not None and cancelled.is_set():
            raise ModelCallError("generation cancelled")
        eos = self.tokenizer.eos_token_id
        results = []
        for i, p in enumerate(prompts):
            new = out[i, width:].tolist()
            finish = "length"
            if eos in new:
                new = new[: new.index(eos)]
                finish = "stop"
            while new and new[-1] == pad:
                new.pop()
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            for s in stops:
                if s and s in text:
                    text = text[: text.index(s)]
                    finish = "stop"
            results.append(
                Completion(
                    text=text,
                    # A batch shares its wall time; each member waited for all of it.
                    latency_s=elapsed,
                    prompt_tokens=len(p),
                    completion_tokens=len(new),
                    cost=self.spec.cost(len(p), len(new)),
                    finish_reason=finish,
                    model=self.name,
                    extra={"batch_size": len(requests)},
                )
            )
        return results


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
