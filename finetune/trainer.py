"""The QLoRA training loop: 4-bit base (bitsandbytes), LoRA (peft), a plain PyTorch loop.

Why not trl's SFTTrainer / transformers' Trainer: see docs/finetuning_guide.md
("Why a plain loop"). In short: the loss is computed on the assistant tokens
only *and* the vocabulary projection is applied only at those positions
(about a fifth of a step on a 135M model), checkpoints are written atomically
so that a SIGKILL never leaves a half checkpoint for --resume, and the run
needs nothing beyond torch + peft + bitsandbytes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import resource
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import adapter as adapter_io
from . import checkpoints as ckpt_io
from .base_model import BaseModel, resolve_base_model
from .config import RESUMABLE_CHANGES, FinetuneConfig, as_config
from .errors import FinetuneError, TrainingInterrupted
from .tasks import (
    IGNORE_INDEX,
    Example,
    TaskFiles,
    TrainData,
    build_examples,
    file_sha256,
    load_messages,
    task_files,
)

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(f"[finetune] {msg}", file=sys.stderr, flush=True)


def _quiet_libraries() -> None:
    # bitsandbytes warns on import that an optional CPU kernel (downloaded from the hub) is absent;
    # we never download, and transformers' per-tensor progress bars drown the step lines.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _fmt_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


# --------------------------------------------------------------------------- data order


def common_prefix_len(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def prefix_groups(examples: list[Example], min_size: int = 8) -> list[list[int]]:
    """Example indices grouped by the first branch of their prompts' prefix tree.

    Every prompt starts with the same system message; the groups are the ways
    the prompts go on after that (for json_extraction: the seven schemas). A
    batch drawn from one group shares a long prefix that is computed once.
    Groups smaller than ``min_size`` (prompts that differ right away, as in
    qa) are pooled into one group, batched as usual.
    """
    order = sorted(range(len(examples)), key=lambda j: examples[j].input_ids)
    if len(order) < 2:
        return [order]
    neighbour = [
        common_prefix_len(examples[a].input_ids, examples[b].input_ids)
        for a, b in zip(order, order[1:], strict=False)
    ]
    shared_by_all = min(neighbour)
    groups, current = [], [order[0]]
    for j, lcp in zip(order[1:], neighbour, strict=True):
        if lcp > shared_by_all:
            current.append(j)
        else:
            groups.append(current)
            current = [j]
    groups.append(current)
    big = [g for g in groups if len(g) >= min_size]
    rest = sorted(j for g in groups if len(g) < min_size for j in g)
    return big + ([rest] if rest else [])


def micro_batches(examples: list[Example], cfg: FinetuneConfig, epoch: int) -> list[list[int]]:
    """The micro-batches (lists of example indices) of one epoch; a pure function of seed and epoch.

    With share_prefix, a batch holds examples of one prefix group (same
    schema), so the shared part of their prompts runs once per batch. With
    group_by_length, examples of similar length share a batch (padding is
    pure waste on a CPU). Batch order is random either way.
    """
    rng = random.Random(cfg.seed * 1_000_003 + epoch)
    position = list(range(len(examples)))
    rng.shuffle(position)
    rank = {j: r for r, j in enumerate(position)}
    groups = prefix_groups(examples, 2 * cfg.batch_size) if cfg.share_prefix else [list(range(len(examples)))]
    bs = cfg.batch_size
    batches: list[list[int]] = []
    for group in groups:
        order = sorted(group, key=rank.__getitem__)  # this epoch's random order within the group
        if cfg.group_by_length:
            chunk = bs * 16
            order = [
                j
                for i in range(0, len(order), chunk)
                for j in sorted(order[i : i + chunk], key=lambda j: -len(examples[j].input_ids))
            ]
        batches += [order[i : i + bs] for i in range(0, len(order), bs)]
    if cfg.group_by_length or cfg.share_prefix:
        rng.shuffle(batches)
    return batches


def total_steps(n_examples: int, cfg: FinetuneConfig) -> int:
    """Optimizer steps of the run: max_steps, or epochs over the data."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_epoch = math.ceil(n_examples / cfg.batch_size)
    return max(1, math.ceil(cfg.epochs * per_epoch / cfg.gradient_accumulation))


def step_batches(examples: list[Example], cfg: FinetuneConfig, start_step: int) -> Iterator[list[list[int]]]:
    """For each optimizer step from ``start_step`` on, its ``gradient_accumulation`` micro-batches."""
    per_epoch = math.ceil(len(examples) / cfg.batch_size)
    micro = start_step * cfg.gradient_accumulation
    cache: dict[int, list[list[int]]] = {}
    while True:
        group = []
        for _ in range(cfg.gradient_accumulation):
            epoch, idx = divmod(micro, per_epoch)
            if epoch not in cache:
                cache.clear()
                cache[epoch] = micro_batches(examples, cfg, epoch)
            group.append(cache[epoch][idx])
            micro += 1
        yield group


MIN_SHARED_PREFIX = 32


def collate(
    examples: list[Example], indices: list[int], pad_id: int, device: Any, share_prefix: bool = False
) -> dict[str, Any]:
    """Right-padded input_ids, attention_mask and labels tensors, and the shared prefix length.

    ``prefix_len`` (0 when not worth it) is the number of leading tokens all
    rows have in common, leaving every row at least one token of its own.
    """
    import torch

    prefix = 0
    if share_prefix and len(indices) > 1:
        rows = [examples[i].input_ids for i in indices]
        prefix = min(common_prefix_len(rows[0], r) for r in rows[1:])
        prefix = min(prefix, min(len(r) for r in rows) - 1)
        if prefix < MIN_SHARED_PREFIX:
            prefix = 0

    width = max(len(examples[i].input_ids) for i in indices)
    ids, mask, labels = [], [], []
    for i in indices:
        ex = examples[i]
        pad = width - len(ex.input_ids)
        ids.append(ex.input_ids + [pad_id] * pad)
        mask.append([1] * len(ex.input_ids) + [0] * pad)
        labels.append(ex.labels + [IGNORE_INDEX] * pad)
    return {
        "input_ids": torch.tensor(ids, device=device),
        "attention_mask": torch.tensor(mask, device=device),
        "labels": torch.tensor(labels, device=device),
        "prefix_len": prefix,
    }


# --------------------------------------------------------------------------- model


def _device(cfg: FinetuneConfig) -> str:
    import torch

    if cfg.device != "auto":
        return cfg.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def compute_dtype(cfg: FinetuneConfig, device: str) -> str:
    """The matmul dtype: ``auto`` is bfloat16 on GPUs and CPUs with native bf16, else float32.

    On a CPU with AVX512-BF16 a SmolLM2 step measured about a quarter cheaper in
    bf16 than in fp32; without it, bf16 is emulated and slower.
    """
    if cfg.compute_dtype != "auto":
        return cfg.compute_dtype
    if device == "cuda":
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if _cpu_has_bf16() else "float32"


def load_tokenizer(base: BaseModel) -> Any:
    """The base model's tokenizer, with a pad token."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(base.path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise FinetuneError(
            f"base model {base.arg!r}: cannot load its tokenizer from {base.path}: {e}"
        ) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        raise FinetuneError(
            f"base model {base.arg!r} has no chat template; training must use the template the eval uses"
        )
    return tok


def load_model(base: BaseModel, cfg: FinetuneConfig, device: str) -> Any:
    """The frozen base (4-bit NF4 when load_in_4bit) with fresh LoRA layers."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    compute = getattr(torch, compute_dtype(cfg, device))
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": torch.float32}
    if cfg.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=cfg.quant_type,
            bnb_4bit_use_double_quant=cfg.double_quant,
            bnb_4bit_compute_dtype=compute,
        )
        kwargs["dtype"] = compute if device == "cuda" else torch.float32
        kwargs["device_map"] = {"": 0} if device == "cuda" else {"": "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(base.path, **kwargs)
    except (OSError, ValueError) as e:
        raise FinetuneError(f"base model {base.arg!r}: cannot load weights from {base.path}: {e}") from None
    if not cfg.load_in_4bit:
        model.to(device)
    if cfg.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in cfg.target_modules if m not in present]
    if missing:
        raise FinetuneError(
            f"target_modules {missing} do not exist in {base.arg!r}; it has e.g. "
            f"{', '.join(sorted(m for m in present if m.endswith('_proj'))[:8])}"
        )
    layers = None
    if cfg.lora_top_layers:
        n_layers = int(model.config.num_hidden_layers)
        layers = list(range(max(0, n_layers - cfg.lora_top_layers), n_layers))
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        layers_to_transform=layers,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    model.config.use_cache = False
    return model


def _decoder_hidden(decoder: Any, batch: dict[str, Any]) -> Any:
    """Last hidden states of the batch, computing a shared prompt prefix once.

    The prefix runs for one row; its key/value cache is repeated for the
    batch and the rows' own tokens attend to it. Gradients flow through the
    cache into the prefix's LoRA weights, so the loss and its gradient equal
    those of the full batch forward (tests compare both).
    """
    ids, mask, prefix = batch["input_ids"], batch["attention_mask"], batch.get("prefix_len", 0)
    if not prefix:
        return decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    import torch

    head = decoder(input_ids=ids[:1, :prefix], use_cache=True)
    cache = head.past_key_values
    cache.batch_repeat_interleave(ids.size(0))
    tail = decoder(input_ids=ids[:, prefix:], attention_mask=mask, past_key_values=cache, use_cache=True)
    shared = head.last_hidden_state.expand(ids.size(0), -1, -1)
    return torch.cat([shared, tail.last_hidden_state], dim=1)


def assistant_loss(model: Any, batch: dict[str, Any], fast: bool = True) -> Any:
    """Mean cross-entropy over the assistant tokens.

    The vocabulary projection (576 x 49152 for SmolLM2, a fifth of the forward
    FLOPs) runs only at the positions that have a label, instead of all of
    them, and a prompt prefix shared by the whole batch runs once. Models with
    logit post-processing (soft-capping) take the ordinary path.
    """
    import torch.nn.functional as F

    inner = model.get_base_model()
    labels = batch["labels"][:, 1:]
    fast = (
        fast
        and getattr(inner.config, "final_logit_softcapping", None) is None
        and hasattr(inner, "get_decoder")
    )
    if fast:
        hidden = _decoder_hidden(inner.get_decoder(), batch)
        keep = labels != IGNORE_INDEX
        logits = inner.get_output_embeddings()(hidden[:, :-1][keep])
        return F.cross_entropy(logits.float(), labels[keep])
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    logits = out.logits[:, :-1]
    return F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX
    )


def lr_at(step: int, total: int, cfg: FinetuneConfig, time_used: float = 0.0) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then the schedule.

    ``time_used`` is the share of the time budget spent (0 without one): the
    schedule follows whichever of steps and time is further along, so a run
    cut short by its budget still ends with a decayed learning rate.
    """
    warm = min(cfg.warmup_steps, max(total - 1, 0))
    if step < warm:
        return cfg.learning_rate * (step + 1) / (warm + 1)
    if cfg.lr_scheduler == "constant":
        return cfg.learning_rate
    progress = min(1.0, max((step - warm) / max(1, total - warm), time_used))
    if cfg.lr_scheduler == "linear":
        return cfg.learning_rate * (1.0 - progress)
    return cfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------- the run

ESTIMATE_AFTER = 3  # steps timed before the run's length is estimated (the first one is slower)


def _estimate_line(
    step: int, total: int, start_step: int, elapsed: float, trained_s: float, budget_s: float
) -> str:
    """The expected training time, from the steps timed so far (the first step, warm-up, counted once)."""
    done = step - start_step
    per_step = elapsed / done
    rest = per_step * (total - step)
    finish = datetime.now(UTC) + _timedelta(rest)
    text = (
        f"expect about {_fmt_duration(elapsed + rest)} of training for {total - start_step} steps "
        f"({per_step:.1f} s/step over the first {done}); done around {finish:%H:%M} UTC"
    )
    if budget_s and trained_s + rest > budget_s:
        text += f"; the {budget_s / 60:g} min time budget will stop it first, at about step " + str(
            step + int(max(0.0, budget_s - trained_s) / per_step)
        )
    return text


def _timedelta(seconds: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=seconds)


def _check_resume_state(
    state: dict[str, Any], cfg: FinetuneConfig, data_sha: str, base: BaseModel, where: Path
) -> None:
    old = state.get("config", {})
    now = cfg.to_dict()
    changed = [k for k in now if k not in RESUMABLE_CHANGES and old.get(k) != now[k]]
    if changed:
        diffs = ", ".join(f"{k}={old.get(k)!r} -> {now[k]!r}" for k in changed)
        raise FinetuneError(
            f"checkpoint {where} was made with other settings ({diffs}); resume with the same settings "
            "(only max_steps, epochs, save_steps and logging may change) or run without --resume to start over"
        )
    if state.get("data_sha256") != data_sha:
        raise FinetuneError(
            f"the train file changed since checkpoint {where} was written; run without --resume to start over"
        )
    if state.get("base_fingerprint") != base.fingerprint:
        raise FinetuneError(
            f"checkpoint {where} was made on base model {state.get('base_model')!r}, not {base.reference!r}; "
            "run without --resume to start over"
        )


def _peak_memory_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare(cfg: FinetuneConfig) -> tuple[BaseModel, Any, TrainData, str, TaskFiles]:
    """Validate inputs and tokenise the data; everything a run needs before touching the weights."""
    if not cfg.output:
        raise FinetuneError("no output directory given; pass --output DIR (e.g. data/lora_adapters/json_v1)")
    files = task_files(cfg.task, cfg.evals_dir, cfg.train_file, cfg.prompt_file)
    out = Path(cfg.output)
    if out.exists() and not (
        out.is_dir() and ((out / "adapter_config.json").is_file() or not any(out.iterdir()))
    ):
        raise FinetuneError(f"output {out} exists and is not an adapter directory; choose another --output")
    rows = load_messages(files, cfg.max_examples)
    base = resolve_base_model(cfg.base_model, cfg.models_file)
    _quiet_libraries()
    tokenizer = load_tokenizer(base)
    data = build_examples(tokenizer, rows, cfg.max_seq_len)
    return base, tokenizer, data, file_sha256(files.train_file), files


def train(
    config: dict[str, Any] | FinetuneConfig,
    *,
    resume: bool = False,
    log: Log | None = None,
    stop_after_step: int | None = None,
) -> Path:
    """Train a LoRA adapter as ``config`` says and return the adapter directory.

    ``config`` is a :class:`FinetuneConfig` or a dict laid over the default CPU
    config (it needs at least ``task`` and ``output``). With ``resume``, the run
    continues from the newest checkpoint in ``<output>.checkpoints/``.
    ``stop_after_step`` (tests) ends the process's work after that step as if interrupted.
    Raises :class:`FinetuneError` for problems the user can fix.
    """
    log = log or _stderr
    cfg = as_config(config)
    wall_start = time.monotonic()
    # Inputs are checked before torch is imported, so a typo fails in a second.
    prepared = prepare(cfg)
    import torch

    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _run(cfg, prepared, resume, log, stop_after_step, wall_start)
    finally:
        torch.set_num_threads(threads)  # the thread count is process-wide: give it back


def _run(
    cfg: FinetuneConfig,
    prepared: tuple[BaseModel, Any, TrainData, str, TaskFiles],
    resume: bool,
    log: Log,
    stop_after_step: int | None,
    wall_start: float,
) -> Path:
    import torch

    base, tokenizer, data, data_sha, files = prepared
    examples = data.examples
    device = _device(cfg)
    total = total_steps(len(examples), cfg)
    n_tokens = sum(len(e.input_ids) for e in examples)
    n_target = sum(sum(1 for x in e.labels if x != IGNORE_INDEX) for e in examples)
    log(
        f"task {cfg.task}: {len(examples)} examples from {files.train_file} "
        f"({n_tokens / len(examples):.0f} tokens each on average, {n_target / len(examples):.0f} of them trained)"
        + (f"; skipped {len(data.skipped)} longer than max_seq_len={cfg.max_seq_len}" if data.skipped else "")
    )
    t0 = time.monotonic()
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model = load_model(base, cfg, device)
    dtype = compute_dtype(cfg, device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(
        f"base {base.reference} ({'4-bit ' + cfg.quant_type if cfg.load_in_4bit else 'not quantized'}, "
        f"{dtype} compute) on {device} loaded in {time.monotonic() - t0:.1f}s; "
        f"LoRA rank {cfg.rank}: {trainable / 1e6:.2f}M trainable parameters"
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

    root = ckpt_io.checkpoint_root(cfg.output)
    step, losses, trained_s, resumed_from = 0, [], 0.0, None
    latest = ckpt_io.latest_checkpoint(root)
    if resume and latest is not None:
        state = latest.state()
        _check_resume_state(state, cfg, data_sha, base, latest.path)
        state = ckpt_io.load_checkpoint(latest, model, optimizer)
        step, losses, trained_s = state["step"], state["losses"], state["training_time_s"]
        resumed_from = step
        log(f"resuming from {latest.path} at step {step}/{total}")
    elif resume:
        log(f"nothing to resume in {root}; starting from step 0")
    elif latest is not None:
        log(
            f"found a checkpoint at step {latest.step} in {root}; starting over (pass --resume to continue it)"
        )
        ckpt_io.clear_checkpoints(root)

    def checkpoint_state() -> dict[str, Any]:
        return {
            "config": cfg.to_dict(),
            "data_sha256": data_sha,
            "base_model": base.reference,
            "base_fingerprint": base.fingerprint,
            "losses": losses,
            "training_time_s": trained_s,
            "total_steps": total,
        }

    autocast = (
        torch.autocast(device_type="cuda" if device == "cuda" else "cpu", dtype=getattr(torch, dtype))
        if dtype != "float32"
        else contextlib.nullcontext()
    )
    pad_id = tokenizer.pad_token_id
    model.train()
    loop_start, steps_here, last_saved = time.monotonic(), 0, step
    batches = step_batches(examples, cfg, step)
    budget_s = cfg.time_budget_min * 60.0

    def time_used() -> float:
        return trained_s / budget_s if budget_s else 0.0

    def schedule_time() -> float:
        # A cap alone must not change the learning rates: then the same steps give the same adapter anywhere.
        return time_used() if cfg.fit_schedule_to_budget else 0.0

    start_step = step
    log(
        f"training {total - step} steps of {cfg.batch_size} x {cfg.gradient_accumulation} examples (seed {cfg.seed})"
        + (f", capped at {cfg.time_budget_min:g} min" if budget_s else "")
        + "; the time it takes is estimated after the first steps"
    )
    try:
        while step < total and time_used() < 1.0:
            step_start = time.monotonic()
            lr = lr_at(step, total, cfg, schedule_time())
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_loss = 0.0
            for indices in next(batches):
                batch = collate(examples, indices, pad_id, device, share_prefix=cfg.share_prefix)
                with autocast:
                    loss = assistant_loss(model, batch) / cfg.gradient_accumulation
                loss.backward()
                step_loss += float(loss.detach())
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            steps_here += 1
            losses.append(round(step_loss, 5))
            trained_s += time.monotonic() - step_start
            last = step == total or time_used() >= 1.0
            if steps_here == ESTIMATE_AFTER and not last:
                log(
                    _estimate_line(
                        step, total, start_step, time.monotonic() - loop_start, trained_s, budget_s
                    )
                )
            if step % cfg.log_every == 0 or last or steps_here == 1:
                elapsed = time.monotonic() - loop_start
                rate = steps_here / elapsed if elapsed > 0 else 0.0
                window = losses[-cfg.log_every :]
                eta = (total - step) / rate if rate > 0 else 0.0
                if budget_s:
                    eta = min(eta, max(0.0, budget_s - trained_s))
                budget = f" ({time_used():.0%} of the {cfg.time_budget_min:g} min budget)" if budget_s else ""
                log(
                    f"step {step}/{total} loss {sum(window) / len(window):.4f} lr {lr:.2e} "
                    f"{rate:.2f} steps/s eta {_fmt_duration(eta)}{budget}"
                )
            if step % cfg.save_steps == 0 and not last:
                save_start = time.monotonic()
                ckpt_io.save_checkpoint(
                    root, step, model, optimizer, checkpoint_state(), cfg.save_total_limit
                )
                trained_s += time.monotonic() - save_start
                last_saved = step
            if stop_after_step is not None and step >= stop_after_step and not last:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        if step > last_saved:
            ckpt_io.save_checkpoint(root, step, model, optimizer, checkpoint_state(), cfg.save_total_limit)
        raise TrainingInterrupted(
            f"interrupted at step {step}/{total}; checkpoint in {root}; continue with the same command and --resume"
        ) from None

    note = None
    if step < total:
        note = (
            f"stopped by time budget at step {step} of {total} (time_budget_min={cfg.time_budget_min:g}); "
            f"not the configured run: continue it with --resume --time-budget 0"
        )
        log(f"WARNING: {note}")
    if cfg.keep_checkpoints and last_saved < step or note:
        # Lets a finished run be extended later: --resume --max-steps MORE.
        ckpt_io.save_checkpoint(root, step, model, optimizer, checkpoint_state(), cfg.save_total_limit)
    out = Path(cfg.output)
    tmp = adapter_io.temp_dir_for(out)
    try:
        model.save_pretrained(str(tmp), save_embedding_layers=False)
        tail = losses[-max(cfg.log_every, 1) :] or [float("nan")]
        meta = {
            "task": cfg.task,
            "base_model": base.reference,
            "base_model_arg": base.arg,
            "base_model_path": base.path,
            "base_fingerprint": base.fingerprint,
            "train_file": str(files.train_file),
            "data_sha256": data_sha,
            "prompt_file": str(files.prompt_file),
            "prompt_sha256": file_sha256(files.prompt_file),
            "examples": len(examples),
            "skipped_examples": len(data.skipped),
            "config": cfg.to_dict(),
            "steps": step,
            "stopped_by": "max_steps" if step >= total else "time_budget",
            "training_note": note,
            "epochs_seen": round(step * cfg.gradient_accumulation * cfg.batch_size / len(examples), 3),
            "first_loss": losses[0] if losses else None,
            "final_loss": round(sum(tail) / len(tail), 5),
            "loss_history": [
                [i + 1, v] for i, v in enumerate(losses) if (i + 1) % cfg.log_every == 0 or i == 0
            ],
            "training_time_s": round(trained_s, 1),
            "wall_time_s": round(time.monotonic() - wall_start, 1),
            "resumed_from_step": resumed_from,
            "device": device,
            "compute_dtype": dtype,
            "threads": torch.get_num_threads(),
            "peak_memory_mb": round(_peak_memory_mb(device)),
            "git": adapter_io.git_commit(),
            "versions": adapter_io.library_versions(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        adapter_io.write_metadata(tmp, meta)
        adapter_io.install(tmp, out)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not cfg.keep_checkpoints and not note:
        ckpt_io.clear_checkpoints(root)
    log(
        f"adapter written to {out} ({step} steps, final loss {meta['final_loss']:.4f}, "
        f"training {_fmt_duration(trained_s)}, wall {_fmt_duration(meta['wall_time_s'])})"
    )
    return out
