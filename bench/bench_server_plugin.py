"""The plugin against a real server: pytest + plugin versus a raw async client, and versus one at a time.

One vLLM server (the embedded SmolLM2, with vLLM's default prefix caching, reset
before each variant so none is served from an earlier one's cache) answers all
three, with the same JSON-extraction prompts, greedy, at most --max-tokens new
tokens:

  1. a raw async client (openai.AsyncOpenAI, --concurrency requests in flight),
     a whole Python process;
  2. pytest with the plugin (a ``vllm_server`` model with ``base_url`` and the
     same max_concurrency), a whole process: per-case items, scorers, summary;
  3. pytest with the plugin and --no-scheduler (one request at a time), on the
     first case and on the first --one-n cases (it takes minutes per dozen
     cases); the whole process for all cases is extrapolated as
     t(1) + (n - 1) * (t(k) - t(1)) / (k - 1), so start-up counts once, as it
     does for the other two.

Run:  .venv/bin/python bench/bench_server_plugin.py [--n 150] [--concurrency 64] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from _common import ROOT, extraction_project, extrapolate, timed

BASE = "embedded:smollm2"

RAW = """import asyncio, json, sys
from openai import AsyncOpenAI

async def main():
    base_url, concurrency, max_tokens, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    requests = [json.loads(line) for line in open(path)]
    client = AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=3600)
    gate = asyncio.Semaphore(concurrency)

    async def one(messages):
        async with gate:
            r = await client.chat.completions.create(model="{model}", messages=messages, temperature=0.0,
                                                     max_tokens=max_tokens)
            return r.usage.completion_tokens

    tokens = await asyncio.gather(*(one(m) for m in requests))
    print(json.dumps({{"n": len(tokens), "completion_tokens": sum(tokens)}}))

asyncio.run(main())
"""


def reset_prefix_cache(server: object) -> None:
    """Empty the server's prefix cache (a dev-mode endpoint), so each variant starts cold."""
    import httpx

    r = httpx.post(f"{server.url}/reset_prefix_cache", timeout=60)
    r.raise_for_status()
    if not r.json().get("success"):
        sys.exit(f"the server did not reset its prefix cache: {r.text}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--one-n", type=int, default=12, help="cases timed one at a time")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--vllm-args", default="", help="more vLLM arguments, e.g. '--block-size 32'")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from pytest_llmeval.backends.embedded import resolve_model_path
    from pytest_llmeval.backends.vllm_process import VLLMServer
    from pytest_llmeval.dataset import load_cases
    from pytest_llmeval.prompts import load_template

    work = Path(tempfile.mkdtemp(prefix="llmeval-bench-server-"))
    ids = extraction_project(work, a.n, a.max_tokens)
    template = load_template(work / "prompt.md")
    with open(work / "requests.jsonl", "w") as f:
        for c in load_cases(work / "cases.jsonl"):
            f.write(json.dumps(template.render(c.data, c.id)) + "\n")
    (work / "raw_client.py").write_text(RAW.format(model=BASE))

    server = VLLMServer(
        resolve_model_path(BASE),
        BASE,
        extra_args=["--dtype", a.dtype, *a.vllm_args.split()],  # on CPU, VLLMServer adds --block-size 32
        env={"VLLM_SERVER_DEV_MODE": "1"},  # for /reset_prefix_cache
        log_path=work / "server.log",
    )
    py = sys.executable
    results: dict[str, tuple[float, int]] = {}
    try:
        server.start()
        server.wait_ready()
        print(f"vLLM server ready in {server.ready_after_s:.1f} s at {server.api_base}", flush=True)
        (work / "models.yaml").write_text(
            f"models:\n  srv:\n    type: vllm_server\n    model: {BASE}\n    base_url: {server.api_base}\n"
            f"    max_concurrency: {a.concurrency}\n    timeout: 3600\n"
        )
        pytest_cmd = [
            py,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "test_bench.py",
            "--model",
            "srv",
            "--models-file",
            "models.yaml",
            "--cache",
            "off",
            "--no-metrics",
        ]
        reset_prefix_cache(server)
        t, out = timed(
            [py, "raw_client.py", server.api_base, str(a.concurrency), str(a.max_tokens), "requests.jsonl"],
            work,
        )
        results["raw async client"] = (t, a.n)
        print(f"  raw async client, {a.concurrency} in flight: {t:.1f} s {out.strip()}", flush=True)
        reset_prefix_cache(server)
        t, _ = timed(pytest_cmd, work)
        results["pytest + plugin"] = (t, a.n)
        print(f"  pytest + plugin, max_concurrency {a.concurrency}: {t:.1f} s", flush=True)
        reset_prefix_cache(server)
        t_k, _ = timed([*pytest_cmd, "--no-scheduler", "-k", " or ".join(ids[: a.one_n])], work)
        reset_prefix_cache(server)
        t_1, _ = timed([*pytest_cmd, "--no-scheduler", "-k", ids[0]], work)
        t = extrapolate(t_1, t_k, a.one_n, a.n)
        results["pytest + plugin --no-scheduler"] = (t, a.n)
        print(
            f"  pytest + plugin --no-scheduler: 1 case {t_1:.1f} s, {a.one_n} cases {t_k:.1f} s, "
            f"{a.n} cases extrapolated {t:.1f} s",
            flush=True,
        )
    finally:
        server.stop()
    print(
        f"\n{a.n} JSON cases on vLLM-CPU ({os.cpu_count()} CPUs, {a.dtype}), max {a.max_tokens} tokens, "
        "whole-process wall time"
    )
    rps = {k: n / t for k, (t, n) in results.items()}
    for k, (t, n) in results.items():
        print(f"  {k:<34} {n:4d} cases {t:7.1f} s  {rps[k]:5.2f} req/s")
    print(
        f"plugin / raw client throughput: {rps['pytest + plugin'] / rps['raw async client']:.2f} (target >= 0.9)"
    )
    print(
        f"plugin / one at a time: {rps['pytest + plugin'] / rps['pytest + plugin --no-scheduler']:.1f}x "
        "(target >= 8x)"
    )


if __name__ == "__main__":
    main()
