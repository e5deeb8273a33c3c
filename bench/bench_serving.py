"""Throughput: the vLLM server versus transformers, and a LoRA adapter versus the base model on vLLM.

Run:  .venv/bin/python bench/bench_serving.py [--n 150] [--concurrency 64] [--batch-size 32] [--max-tokens 128]

The requests are the JSON-extraction cases (evals/json_extraction/cases.jsonl
rendered with prompt.md; synthetic prompts if the file is missing), greedy,
at most --max-tokens new tokens each. vLLM gets them through the plugin's
``vllm_server`` backend from --concurrency threads; transformers gets them
through the ``hf`` backend in batches of --batch-size with left padding,
on the first --hf-n requests only (default 32, one batch: on a 2-core machine
transformers needs minutes per batch of these ~330-token prompts, and its
requests/s barely depend on how many batches are timed).
The adapter is --adapter, else data/lora_adapters/json_v1, else a fresh
zero-initialised r=8 LoRA (identical outputs to the base model, so the two
vLLM runs generate the same tokens and only the LoRA arithmetic differs).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pytest_llmeval.backends.base import Completion, Request  # noqa: E402
from pytest_llmeval.backends.embedded import resolve_model_path  # noqa: E402
from pytest_llmeval.backends.hf import HFSpec  # noqa: E402
from pytest_llmeval.backends.vllm_server import VLLMServerSpec  # noqa: E402

BASE = "embedded:smollm2"
CASES = REPO / "evals/json_extraction/cases.jsonl"
PROMPT = REPO / "evals/json_extraction/prompt.md"


def load_requests(n: int, max_tokens: int) -> tuple[list[Request], str]:
    params = {"max_tokens": max_tokens, "temperature": 0.0}
    if CASES.is_file() and PROMPT.is_file():
        from pytest_llmeval.dataset import load_cases
        from pytest_llmeval.prompts import load_template

        template = load_template(PROMPT)
        cases = load_cases(CASES)[:n]
        return [
            Request.make(template.render(c.data, c.id), **params) for c in cases
        ], f"{len(cases)} cases of {CASES.name}"
    reqs = [
        Request.make(
            [{"role": "user", "content": f"Extract name and age as JSON: Person {i} is {20 + i % 50}."}],
            **params,
        )
        for i in range(n)
    ]
    return reqs, f"{n} synthetic prompts ({CASES} missing)"


def make_adapter(path: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(resolve_model_path(BASE))
    torch.manual_seed(0)
    get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])).save_pretrained(
        path
    )
    return path


def run_vllm(backend, requests: list[Request], concurrency: int) -> tuple[float, list[Completion]]:
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        outs = list(pool.map(backend.generate, requests))
    return time.perf_counter() - started, outs


def run_hf(requests: list[Request], batch_size: int) -> tuple[float, list[Completion]]:
    from pytest_llmeval.backends.hf import HFBackend

    backend = HFBackend(HFSpec(name="hf", type="hf", path=BASE, batch_size=batch_size))
    backend.load()
    started = time.perf_counter()
    outs: list[Completion] = []
    for i in range(0, len(requests), batch_size):
        outs += backend.generate_batch(requests[i : i + batch_size])
    return time.perf_counter() - started, outs


def line(label: str, elapsed: float, outs: list[Completion]) -> tuple[str, float]:
    toks = sum(c.completion_tokens for c in outs)
    rps = len(outs) / elapsed
    return (
        f"  {label:<44} {rps:6.2f} req/s  {toks / elapsed:7.1f} tok/s  ({len(outs)} in {elapsed:.1f} s, {toks} tokens)",
        rps,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--dtype", default=None, help="vLLM --dtype (default: vLLM's choice, bfloat16 on CPU)")
    ap.add_argument("--kv-cache-gib", type=int, default=2)
    ap.add_argument("--hf-n", type=int, default=32, help="requests timed on transformers (0: skip)")
    a = ap.parse_args()

    from pytest_llmeval.backends.vllm_process import VLLMServer
    from pytest_llmeval.backends.vllm_server import VLLMServerBackend

    requests, what = load_requests(a.n, a.max_tokens)
    work = Path(tempfile.mkdtemp(prefix="llmeval-bench-serving-"))
    adapter = a.adapter or (
        str(REPO / "data/lora_adapters/json_v1")
        if (REPO / "data/lora_adapters/json_v1/adapter_config.json").is_file()
        else None
    )
    adapter_note = adapter or "zero-initialised r=8 LoRA (same outputs as the base)"
    if adapter is None:
        adapter = str(make_adapter(work / "zero-lora"))
    extra = ["--dtype", a.dtype] if a.dtype else []
    print(f"requests: {what}, max_tokens {a.max_tokens}, greedy; adapter: {adapter_note}", flush=True)
    print(
        f"machine: {os.cpu_count()} CPUs; vLLM dtype: {a.dtype or 'auto'}; transformers: float32", flush=True
    )

    server = VLLMServer(
        resolve_model_path(BASE),
        BASE,
        {"json-lora": adapter},
        extra_args=extra,
        kv_cache_gib=a.kv_cache_gib,
        log_path=work / "server.log",
    )
    results: dict[str, float] = {}
    rows: list[str] = []
    try:
        server.start()
        server.wait_ready()
        print(
            f"vLLM server ready in {server.ready_after_s:.1f} s ({server.api_base}, log {server.log_path})",
            flush=True,
        )
        backends = {}
        for name, adapter_name in (("base", None), ("adapter", "json-lora")):
            spec = VLLMServerSpec(
                name=name,
                type="vllm_server",
                model=BASE,
                adapters={"json-lora": adapter},
                adapter=adapter_name,
                max_concurrency=a.concurrency,
                timeout=1800.0,
            )
            b = VLLMServerBackend(spec)
            b.base_url = server.api_base
            b.generate(requests[0])  # warm-up (first LoRA use loads it)
            backends[name] = b
        outs = {}
        for name in ("base", "adapter"):
            elapsed, outs[name] = run_vllm(backends[name], requests, a.concurrency)
            row, results[f"vllm-{name}"] = line(
                f"vLLM {name}, {a.concurrency} in flight", elapsed, outs[name]
            )
            print(row, flush=True)
            rows.append(row)
    finally:
        server.stop()
    if a.hf_n > 0:
        elapsed, hf_outs = run_hf(requests[: a.hf_n], a.batch_size)
        row, results["hf"] = line(f"transformers, batches of {a.batch_size}", elapsed, hf_outs)
        print(row, flush=True)
        rows.append(row)
        pairs = zip(hf_outs, outs["base"][: len(hf_outs)], strict=True)
        same = sum(x.text.strip() == y.text.strip() for x, y in pairs) / len(hf_outs)
        print(f"  exact-match agreement vLLM base vs transformers: {same:.2f}", flush=True)
    same_ad = sum(x.text == y.text for x, y in zip(outs["base"], outs["adapter"], strict=True)) / len(
        requests
    )
    print("\nsummary")
    for row in rows:
        print(row)
    if "hf" in results:
        print(f"  vLLM base / transformers:     {results['vllm-base'] / results['hf']:.2f}x")
        print(f"  vLLM adapter / transformers:  {results['vllm-adapter'] / results['hf']:.2f}x")
    print(
        f"  vLLM adapter / vLLM base:     {results['vllm-adapter'] / results['vllm-base']:.2f}x "
        f"(same outputs for {same_ad:.0%} of requests)"
    )


if __name__ == "__main__":
    main()
