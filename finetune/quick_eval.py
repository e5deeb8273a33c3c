"""A quick check of an adapter against its base, outside pytest: ``python -m finetune.quick_eval``.

    python -m finetune.quick_eval --task json_extraction --base-model smollm2 \\
        --adapter data/lora_adapters/json_v1 [--limit 50] [--out data/quick_eval.json]

Greedy generation in left-padded batches on the task's ``cases.jsonl``, with
the eval's prompt template and chat template, on the non-quantized base (as
the plugin's hf backend loads it), with and without the adapter. For
json_extraction a case passes when ``json.loads(output) == expected``
(key order aside); for other tasks, when the output equals the target. The
real evaluation is ``pytest evals/<task> --model ...``; this is for tuning.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .errors import FinetuneError


def _passes(task: str, output: str, case: dict[str, Any], target: str) -> bool:
    if task == "json_extraction":
        try:
            return json.loads(output.strip()) == case["expected"]
        except ValueError:
            return False
    return output.strip() == target.strip()


def generate(
    model: Any, tok: Any, prompts: list[list[int]], batch_size: int, max_new_tokens: int, log: Any = None
) -> list[str]:
    """Greedy completions for token-id prompts, in batches (longest first), as the hf backend makes them."""
    from pytest_llmeval.backends.hf import generate_tokens

    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        new = generate_tokens(model, [prompts[i] for i in idx], tok.pad_token_id, max_new_tokens)
        for row, i in enumerate(idx):
            out[i] = tok.decode(new[row], skip_special_tokens=True)
        if log:
            log(f"  {min(start + batch_size, len(order))}/{len(order)} generated")
    return out


def evaluate(
    task: str,
    base_model: str,
    adapters: list[str],
    *,
    cases_file: str | None = None,
    evals_dir: str = "evals",
    limit: int = 0,
    batch_size: int = 16,
    max_new_tokens: int = 256,
    include_base: bool = True,
    log: Any = None,
) -> dict[str, Any]:
    """Pass rates (overall and per tag) of the base and of each adapter; outputs included."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_llmeval.backends.hf import use_cpu_attention
    from pytest_llmeval.dataset import load_cases
    from pytest_llmeval.prompts import load_template

    from .base_model import resolve_base_model
    from .tasks import TASKS, chat_ids, task_files

    log = log or (lambda m: print(f"[quick_eval] {m}", file=sys.stderr, flush=True))
    files = task_files(task, evals_dir, None, None)
    cases = load_cases(cases_file or Path(evals_dir) / task / "cases.jsonl")
    if limit:
        cases = cases[:limit]
    template = load_template(files.prompt_file)
    base = resolve_base_model(base_model)
    tok = AutoTokenizer.from_pretrained(base.path, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    prompts = [
        chat_ids(
            tok.apply_chat_template(template.render(c.data, c.id), add_generation_prompt=True, tokenize=True)
        )
        for c in cases
    ]
    targets = [TASKS[task].target(c.data) for c in cases]
    runs: list[tuple[str, str | None]] = ([("base", None)] if include_base else []) + [
        (a, a) for a in adapters
    ]
    results: dict[str, Any] = {"task": task, "base_model": base.reference, "cases": len(cases), "runs": {}}
    for name, adapter in runs:
        model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32, local_files_only=True)
        if adapter:
            from .adapter import check_adapter_base

            problem = check_adapter_base(adapter, base.fingerprint)
            if problem:
                raise FinetuneError(problem)
            # Merged, the adapter costs nothing per token; the outputs are the same up to float rounding.
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        use_cpu_attention(model, "cpu")
        model.eval()
        started = time.monotonic()
        outputs = generate(model, tok, prompts, batch_size, max_new_tokens, log)
        took = time.monotonic() - started
        ok = [_passes(task, o, c.data, t) for o, c, t in zip(outputs, cases, targets, strict=True)]
        by_tag: dict[str, list[bool]] = {}
        for c, passed in zip(cases, ok, strict=True):
            for tag in c.tags[:1]:
                by_tag.setdefault(tag, []).append(passed)
        results["runs"][name] = {
            "pass_rate": sum(ok) / len(ok),
            "passed": sum(ok),
            "by_tag": {t: round(sum(v) / len(v), 3) for t, v in sorted(by_tag.items())},
            "generation_s": round(took, 1),
            "outputs": [
                {"id": c.id, "pass": p, "output": o} for c, p, o in zip(cases, ok, outputs, strict=True)
            ],
        }
        log(
            f"{name}: {sum(ok)}/{len(ok)} = {sum(ok) / len(ok):.1%} pass ({took:.0f}s)  by tag {results['runs'][name]['by_tag']}"
        )
    return results


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m finetune.quick_eval``."""
    p = argparse.ArgumentParser(prog="python -m finetune.quick_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="json_extraction")
    p.add_argument("--base-model", default="smollm2")
    p.add_argument("--adapter", action="append", default=[], help="adapter directory (repeatable)")
    p.add_argument("--no-base", action="store_true", help="skip the base model run")
    p.add_argument("--cases", help="cases file (default: evals/<task>/cases.jsonl)")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--out", help="write all outputs and pass rates as JSON here")
    args = p.parse_args(argv)
    from .cli import calm_threads

    calm_threads()
    try:
        res = evaluate(
            args.task,
            args.base_model,
            args.adapter,
            cases_file=args.cases,
            limit=args.limit,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            include_base=not args.no_base,
        )
    except FinetuneError as e:
        print(f"quick_eval: error: {e}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1, ensure_ascii=False))
    for name, run in res["runs"].items():
        print(f"{name}: {run['passed']}/{res['cases']} = {run['pass_rate']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
