"""CPU training throughput: the old default CPU config against the new one, side by side in one run.

Both train the json_extraction adapter on the embedded SmolLM2 with the real
trainer (``finetune.train``) for the same few steps on the same data; the
figure is training tokens (the tokens of the rows a step trains on, prompt and
answer) per second of training time, and both loss curves are printed. With
``--profile``, one batch of each config is timed phase by phase (forward,
backward, optimizer step) first: where a step's time goes.

  old: 4-bit NF4 base (bitsandbytes dequantizes every weight on every matmul), LoRA dropout 0.05,
       batch 4, LoRA on all 30 layers (the config before issue 24)
  new: finetune/configs/cpu.yaml (float32 base, no dropout, batch 8, LoRA on the top 12 layers)

Run:  .venv/bin/python bench/bench_train.py [--steps 8] [--profile] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OLD = {  # finetune/configs/cpu.yaml before issue 24 (commit 7a09f78)
    "load_in_4bit": True,
    "dropout": 0.05,
    "batch_size": 4,
    "lora_top_layers": 0,
}


def configs(steps: int, work: Path) -> dict[str, dict]:
    common = {
        "task": "json_extraction",
        "base_model": "smollm2",
        "max_steps": steps,
        "warmup_steps": 2,
        "time_budget_min": 0.0,
        "log_every": 1,
        "save_steps": 10_000,
        "evals_dir": str(ROOT / "evals"),
        "models_file": str(ROOT / "evals" / "models.yaml"),
    }
    return {
        "old": {**common, **OLD, "output": str(work / "old")},
        "new": {**common, "output": str(work / "new")},
    }


def trained_tokens(cfg_dict: dict) -> tuple[int, int]:
    """(all tokens, answer tokens) of the rows the run's steps train on: the trainer's own batch order."""
    from finetune.config import as_config
    from finetune.tasks import IGNORE_INDEX
    from finetune.trainer import prepare, step_batches

    cfg = as_config(cfg_dict)
    _, _, data, _, _ = prepare(cfg.replace(output=cfg.output + "-probe"))
    ex = data.examples
    batches = step_batches(ex, cfg, 0)
    rows = [i for _ in range(cfg.max_steps) for group in next(batches) for i in group]
    return (
        sum(len(ex[i].input_ids) for i in rows),
        sum(sum(1 for x in ex[i].labels if x != IGNORE_INDEX) for i in rows),
    )


def profile(cfg_dict: dict, repeats: int = 2) -> dict[str, float]:
    """Seconds per phase of one step (best of ``repeats``), on the run's first batch."""
    import torch

    from finetune.config import as_config
    from finetune.trainer import _device, assistant_loss, collate, load_model, prepare, step_batches

    cfg = as_config(cfg_dict)
    base, tok, data, _, _ = prepare(cfg.replace(output=cfg.output + "-probe"))
    device = _device(cfg)
    model = load_model(base, cfg, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    batch = collate(
        data.examples,
        next(step_batches(data.examples, cfg, 0))[0],
        tok.pad_token_id,
        device,
        share_prefix=cfg.share_prefix,
    )
    best: dict[str, float] = {}
    model.train()
    for _ in range(repeats):
        t0 = time.perf_counter()
        loss = assistant_loss(model, batch)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        for k, v in (("forward", t1 - t0), ("backward", t2 - t1), ("optimizer", t3 - t2)):
            best[k] = min(best.get(k, v), v)
    best["tokens"] = int(batch["attention_mask"].sum())
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per config (default 8)")
    ap.add_argument("--profile", action="store_true", help="time one step phase by phase first")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # what python -m finetune sets (finetune/cli.py)
    from finetune import adapter_metadata, train

    work = Path(tempfile.mkdtemp(prefix="llmeval-bench-train-"))
    result: dict[str, dict] = {}
    for name, cfg in configs(a.steps, work).items():
        row: dict = {}
        if a.profile:
            row["profile"] = prof = profile(cfg)
            print(
                f"{name}: one step of {prof['tokens']} tokens: forward {prof['forward']:.2f}s, "
                f"backward {prof['backward']:.2f}s, optimizer {prof['optimizer']:.3f}s",
                flush=True,
            )
        tokens, answer = trained_tokens(cfg)
        started = time.perf_counter()
        out = train(cfg, log=lambda m, n=name: print(f"  [{n}] {m}", flush=True))
        meta = adapter_metadata(out)
        row.update(
            tokens=tokens,
            answer_tokens=answer,
            training_s=meta["training_time_s"],
            wall_s=round(time.perf_counter() - started, 1),
            losses=[v for _, v in meta["loss_history"]],
            tokens_per_s=tokens / meta["training_time_s"],
            batch_size=meta["config"]["batch_size"],
        )
        result[name] = row
        print(
            f"{name}: {a.steps} steps x batch {row['batch_size']}: {tokens} tokens ({answer} answer tokens) "
            f"in {row['training_s']:.1f}s of training = {row['tokens_per_s']:.1f} tokens/s; "
            f"losses {row['losses']}",
            flush=True,
        )
    ratio = result["new"]["tokens_per_s"] / result["old"]["tokens_per_s"]
    print(
        f"new / old training tokens per second: {ratio:.2f}x "
        f"(wall: old {result['old']['wall_s']}s, new {result['new']['wall_s']}s)"
    )
    if a.json:
        a.json.write_text(json.dumps({"ratio": ratio, **result}, indent=2))


if __name__ == "__main__":
    main()
