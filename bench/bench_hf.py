"""In-process transformers throughput: the plugin versus one at a time, and versus lm-evaluation-harness.

The same 64 JSON-extraction cases on the same converted SmolLM2, greedy, at
most 128 new tokens, whole-process wall time, measured side by side:

  1. pytest with the plugin (batches of 32, ahead-of-time scheduling);
  2. pytest with the plugin and --no-scheduler (one request at a time);
  3. lm-eval (`pip install lm-eval`), --model hf --batch_size 32, a local generate_until task.

Run:  .venv/bin/python bench/bench_hf.py [--n 64] [--one-n 16] [--skip-lm-eval]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from _common import ROOT, extraction_project, extrapolate, timed

MAX_TOKENS = 128


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--skip-lm-eval", action="store_true")
    ap.add_argument(
        "--one-n",
        type=int,
        default=0,
        help="time one-at-a-time on the first N cases only and compare requests/s (0: all)",
    )
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from pytest_llmeval import load_cases, load_template
    from pytest_llmeval.backends.embedded import materialize

    model_dir = materialize("smollm2")
    work = Path(tempfile.mkdtemp(prefix="llmeval-bench-hf-"))
    ids = extraction_project(work, a.n, MAX_TOKENS)
    shutil.copy(ROOT / "evals" / "models.yaml", work / "models.yaml")

    # The same prompts for lm-eval: its chat template gets our system text and user message.
    template = load_template(work / "prompt.md")
    rendered = [template.render(c.data, c.id) for c in load_cases(work / "cases.jsonl")]
    system = rendered[0][0]["content"]
    assert all(m[0]["content"] == system for m in rendered)
    with open(work / "lmeval.jsonl", "w") as f:
        for c, msgs in zip(load_cases(work / "cases.jsonl"), rendered, strict=True):
            f.write(json.dumps({"prompt": msgs[1]["content"], "target": json.dumps(c["expected"])}) + "\n")
    (work / "lmeval_task.yaml").write_text(
        "task: llmeval_json\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {work / 'lmeval.jsonl'}\n"
        'test_split: test\noutput_type: generate_until\ndoc_to_text: "{{prompt}}"\n'
        'doc_to_target: "{{target}}"\n'
        f'generation_kwargs:\n  until: ["<|im_end|>"]\n  max_gen_toks: {MAX_TOKENS}\n  do_sample: false\n'
        "metric_list:\n  - metric: exact_match\n"
    )
    py = sys.executable
    common = [
        py,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "test_bench.py",
        "--model",
        "smollm2",
        "--models-file",
        "models.yaml",
        "--cache",
        "off",
        "--no-metrics",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    results = {}
    results["plugin (batch 32, scheduler)"] = timed(common, work, env)[0]
    one_n = a.one_n or a.n
    one_k = [] if one_n >= a.n else ["-k", " or ".join(ids[:one_n])]
    one_label = f"plugin --no-scheduler (one at a time{'' if one_n >= a.n else f', first {one_n} cases'})"
    t_k = timed([*common, "--no-scheduler", *one_k], work, env)[0]
    if one_n < a.n:
        # Start-up (imports, model load) happens once: time one case too, and extrapolate only
        # the per-case part.
        t_1 = timed([*common, "--no-scheduler", "-k", ids[0]], work, env)[0]
        t_k = extrapolate(t_1, t_k, one_n, a.n)
    results[one_label] = t_k
    if not a.skip_lm_eval and shutil.which("lm_eval", path=str(Path(py).parent)):
        results["lm-eval hf --batch_size 32"] = timed(
            [
                str(Path(py).parent / "lm_eval"),
                "--model",
                "hf",
                "--model_args",
                f"pretrained={model_dir},dtype=float32",
                "--tasks",
                "llmeval_json",
                "--include_path",
                str(work),
                "--batch_size",
                "32",
                "--device",
                "cpu",
                "--apply_chat_template",
                "--system_instruction",
                system,
                "--output_path",
                str(work / "lmeval_out"),
            ],
            work,
            env,
        )[0]
    print(f"{a.n} JSON cases, max {MAX_TOKENS} new tokens, whole-process wall time")
    base = results["plugin (batch 32, scheduler)"]
    for name, t in results.items():
        print(f"  {name:<42} {t:7.1f}s   {t / base:5.2f}x the plugin's time")
    if one_n < a.n:
        print(f"  (one at a time: timed on 1 and on {one_n} cases, per-case time extrapolated to {a.n})")
    one = results[one_label]
    print(f"speed-up of the scheduler over one at a time: {one / base:.2f}x")
    if "lm-eval hf --batch_size 32" in results:
        print(f"plugin / lm-eval time: {base / results['lm-eval hf --batch_size 32']:.2f}")


if __name__ == "__main__":
    main()
