"""Shared-prefix prefill for in-process generation: a batch's prompts, as a prefix tree, into a static cache.

:func:`prefill_prompts` runs every run of tokens that several prompts share through the model once;
:func:`prefilled_cache` writes each prompt's key/value states, left-padded, into the ``StaticCache``
that ``generate`` continues from; :func:`_plain_kv_layers` says whether a model's layers allow it.
Moved out of :mod:`pytest_llmeval.backends.hf`, which uses and re-exports them; torch and transformers
are imported inside the functions, as there.
"""

from __future__ import annotations

from typing import Any


def _plain_kv_layers(model: Any) -> bool:
    """Whether every layer keeps a plain key/value cache (no sliding window, no recurrent state).

    Only then can a batch's cache be assembled from per-prompt pieces; other
    architectures generate the ordinary way.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cached = getattr(model, "_llmeval_plain_kv", None)
    if cached is None:
        try:
            layers = DynamicCache(config=model.config).layers
            cached = bool(layers) and all(type(layer) is DynamicLayer for layer in layers)
        except Exception:  # a config the cache classes do not understand
            cached = False
        model._llmeval_plain_kv = cached
    return cached


def prefill_prompts(model: Any, prompts: list[list[int]], on_prompt: Any) -> None:
    """Compute the key/value states of each prompt without its last token, shared prefixes once.

    The prompts form a prefix tree: every run of tokens that several prompts share
    (a system message, a JSON schema) goes through the model once, and each prompt
    then continues from its branch alone, so no padding is computed either. As each
    prompt is done, ``on_prompt(i, kv)`` gets its index and one ``(keys, values)`` pair
    per layer, each ``(1, kv_heads, len - 1, head_dim)``; nothing is kept after that.
    The last token is left for ``generate``, whose first step yields the first new token.
    Every prompt must have at least two tokens.
    """
    import torch
    from transformers import DynamicCache

    device = next(model.parameters()).device

    def fill(rows: list[int], start: int, kv: list[tuple[Any, Any]] | None) -> None:
        first = prompts[rows[0]]
        end = min(len(prompts[r]) - 1 for r in rows)
        shared = start
        while shared < end and all(prompts[r][shared] == first[shared] for r in rows):
            shared += 1
        if shared > start:
            cache = (
                DynamicCache(ddp_cache_data=kv, config=model.config)
                if kv
                else DynamicCache(config=model.config)
            )
            model(
                input_ids=torch.tensor([first[start:shared]], device=device),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            kv = [(layer.keys, layer.values) for layer in cache.layers]
        branches: dict[int, list[int]] = {}
        for r in rows:
            if len(prompts[r]) - 1 == shared:
                on_prompt(r, kv)
            else:
                branches.setdefault(prompts[r][shared], []).append(r)
        for branch in branches.values():
            fill(branch, shared, kv)

    fill(list(range(len(prompts))), 0, None)


def prefilled_cache(model: Any, prompts: list[list[int]], max_new_tokens: int) -> Any:
    """A static cache holding every prompt but its last token, left-padded like the batch's input ids.

    Each prompt's states are written into the cache as soon as they are computed, so
    the peak memory is the cache's own plus one prompt's.
    """
    from transformers import StaticCache

    width = max(len(p) for p in prompts)
    cache = StaticCache(config=model.config, max_cache_len=width + max_new_tokens)
    if min(len(p) for p in prompts) < 2:  # a one-token prompt has nothing to cache before it
        return cache

    allocated = False

    def write(i: int, kv: list[tuple[Any, Any]]) -> None:
        nonlocal allocated
        if not allocated:
            for layer, (k, _) in enumerate(kv):  # allocate, and mark width - 1 positions as filled
                zeros = k.new_zeros(len(prompts), k.shape[1], width - 1, k.shape[3])
                cache.update(zeros, zeros, layer)
            allocated = True
        n = len(prompts[i]) - 1
        for layer, (k, v) in enumerate(kv):
            cache.layers[layer].keys[i, :, width - 1 - n : width - 1] = k[0]
            cache.layers[layer].values[i, :, width - 1 - n : width - 1] = v[0]

    prefill_prompts(model, prompts, write)
    return cache
