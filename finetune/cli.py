"""``python -m finetune``: train a LoRA adapter for an eval task.

    python -m finetune --task json_extraction --base-model smollm2 --output data/lora_adapters/json_v1
    python -m finetune ... --config finetune/configs/gpu_24gb.yaml --max-steps 500 --set warmup_steps=20
    python -m finetune ... --resume        # continue an interrupted run from its last checkpoint

Exit status: 0 done, 2 bad input (one line on stderr says what to fix),
130 interrupted (a checkpoint was written; rerun with --resume).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

from .config import FinetuneConfig, build_config
from .errors import FinetuneError, TrainingInterrupted

# CLI flag -> config key, for the flags that are shorthands of --set.
_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--task", "task", str, "eval task to train for (json_extraction, qa)"),
    ("--base-model", "base_model", str, "models.yaml name, embedded:NAME, local directory or cached hub id"),
    (
        "--output",
        "output",
        str,
        "adapter directory to write (replaced only when the new adapter is complete)",
    ),
    ("--train-file", "train_file", str, "train JSONL (default: evals/<task>/train.jsonl)"),
    ("--models-file", "models_file", str, "models.yaml used to resolve --base-model names"),
    ("--rank", "rank", int, "LoRA rank"),
    ("--alpha", "alpha", int, "LoRA alpha"),
    ("--dropout", "dropout", float, "LoRA dropout"),
    ("--target-modules", "target_modules", str, "comma-separated module names, e.g. q_proj,v_proj"),
    ("--lr", "learning_rate", float, "peak learning rate"),
    ("--epochs", "epochs", float, "passes over the data (ignored when --max-steps > 0)"),
    ("--max-steps", "max_steps", int, "optimizer steps (overrides --epochs)"),
    ("--time-budget", "time_budget_min", float, "minutes of training before it stops (0: no limit)"),
    ("--batch-size", "batch_size", int, "examples per micro-batch"),
    ("--grad-accum", "gradient_accumulation", int, "micro-batches per optimizer step"),
    ("--max-seq-len", "max_seq_len", int, "longer examples are skipped"),
    ("--max-examples", "max_examples", int, "use only the first N train rows (0: all)"),
    ("--seed", "seed", int, "seed for data order, LoRA init and dropout"),
    ("--save-steps", "save_steps", int, "write a checkpoint every N steps"),
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (shared by main() and the docs)."""
    p = argparse.ArgumentParser(
        prog="python -m finetune",
        description="QLoRA-finetune a base model on an eval task's train split, with the eval's prompt template.",
    )
    p.add_argument(
        "--config",
        metavar="YAML",
        help="config file (default: finetune/configs/cpu.yaml; GPU: gpu_24gb.yaml)",
    )
    for flag, key, typ, help_text in _FLAGS:
        p.add_argument(flag, dest=key, type=typ, default=None, help=help_text)
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config key (repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of --output")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep <output>.checkpoints/ after success")
    p.add_argument(
        "--dry-run", action="store_true", help="check inputs, print the effective config and data stats"
    )
    return p


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """Defaults < --config file < flags < --set."""
    overrides = {key: getattr(args, key) for _, key, _, _ in _FLAGS}
    if args.keep_checkpoints:
        overrides["keep_checkpoints"] = True
    return build_config(args.config, overrides=overrides, sets=args.sets)


def _dry_run(cfg: FinetuneConfig) -> None:
    from .trainer import prepare, total_steps

    base, _, data, data_sha, files = prepare(cfg)
    print(json.dumps(cfg.to_dict(), indent=2))
    lengths = sorted(len(e.input_ids) for e in data.examples)
    print(
        f"base {base.reference} -> {base.path}\n"
        f"train file {files.train_file} (sha256 {data_sha[:16]}): {len(data.examples)} examples, "
        f"{len(data.skipped)} skipped as longer than {cfg.max_seq_len} tokens; tokens per example: "
        f"median {lengths[len(lengths) // 2]}, max {lengths[-1]}\n"
        f"steps: {total_steps(len(data.examples), cfg)}"
    )


def calm_threads() -> None:
    """Let idle OpenMP threads sleep instead of spin (unless the user chose otherwise).

    On a CPU shared with other busy processes, spinning threads of torch's
    OpenMP pool wait on each other for whole time slices: measured here, a
    SmolLM2 forward took 10x longer with the default policy than with PASSIVE.
    Must run before torch is imported; later it changes nothing.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    calm_threads()
    try:
        cfg = config_from_args(args)
        if args.dry_run:
            _dry_run(cfg)
            return 0
        from .trainer import train

        previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
        try:
            train(cfg, resume=args.resume)
        finally:
            signal.signal(signal.SIGTERM, previous)
    except TrainingInterrupted as e:
        print(f"finetune: {e}", file=sys.stderr)
        return 130
    except FinetuneError as e:
        print(f"finetune: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("finetune: interrupted before training started", file=sys.stderr)
        return 130
    return 0
