"""The hf backend with the real embedded SmolLM2 (and a real PEFT adapter)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_llmeval.backends.base import Request
from pytest_llmeval.backends.embedded import MARKER, materialize
from pytest_llmeval.errors import ModelCallError
from pytest_llmeval.models import parse_models

pytestmark = pytest.mark.slow

PROMPTS = [
    "What is the capital of France? Answer in one word.",
    "Write the number seven as a digit.",
    "Say hello to Ana.",
]


def _spec(**extra):
    return parse_models({"models": {"m": {"type": "hf", "path": "embedded:smollm2", **extra}}})["m"]


@pytest.fixture(scope="module")
def base_backend():
    from pytest_llmeval.backends.hf import HFBackend

    b = HFBackend(_spec(batch_size=8))
    b.load()
    return b


def _req(text: str, max_tokens: int = 12) -> Request:
    return Request.make([{"role": "user", "content": text}], max_tokens=max_tokens)


def test_batched_greedy_matches_one_at_a_time(base_backend):
    batched = base_backend.generate_batch([_req(p) for p in PROMPTS])
    single = [base_backend.generate_batch([_req(p)])[0] for p in PROMPTS]
    assert all(c.text.strip() for c in batched)
    agree = sum(a.text == b.text for a, b in zip(batched, single, strict=True))
    assert agree >= len(PROMPTS) - 1, [(a.text, b.text) for a, b in zip(batched, single, strict=True)]
    c = batched[0]
    assert c.prompt_tokens > 5 and 0 < c.completion_tokens <= 12
    assert c.finish_reason in ("stop", "length") and c.latency_s > 0


def test_shared_prompt_prefixes_go_through_the_model_once(base_backend):
    """A batch's common prefixes (system message, schema) are computed once, and change no output."""
    import torch

    system_a = 'You extract data. Reply with JSON that matches this schema: {"name": string, "age": integer}.'
    system_b = "You answer questions about geography in one short sentence."
    requests = [
        Request.make([{"role": "system", "content": system_a}, {"role": "user", "content": u}], max_tokens=16)
        for u in ("Ana is 31.", "Bo, aged 7.", "The customer, Carla Diaz, turned 45 today.")
    ] + [
        Request.make([{"role": "system", "content": system_b}, {"role": "user", "content": u}], max_tokens=16)
        for u in ("Capital of Peru?", "Longest river in Africa?")
    ]
    model = base_backend.model
    prompts = [base_backend._prompt_ids(r) for r in requests]
    forwarded: list[int] = []

    def count(_module, _args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[0] == 1:  # the per-prefix passes; the batched decode has 5 rows
            forwarded.append(ids.shape[1])

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        batched = base_backend.generate_batch(requests)
    finally:
        handle.remove()
    # Every distinct prefix (a node of the prompts' prefix tree) goes through the model exactly once.
    nodes = {tuple(p[:k]) for p in prompts for k in range(1, len(p))}
    assert sum(forwarded) == len(nodes)
    assert sum(forwarded) < sum(len(p) - 1 for p in prompts) * 0.6
    # ... and the text is what plain generate gives each prompt alone, without any cache tricks.
    alone = []
    for p in prompts:
        with torch.inference_mode():
            out = model.generate(
                input_ids=torch.tensor([p]),
                max_new_tokens=16,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        new = out[0, len(p) :].tolist()
        eos = base_backend.tokenizer.eos_token_id
        alone.append(
            base_backend.tokenizer.decode(
                new[: new.index(eos)] if eos in new else new, skip_special_tokens=True
            )
        )
    assert [c.text for c in batched] == alone


def test_4bit_model_generates_the_same_batched_and_alone():
    """load_in_4bit (bitsandbytes nf4, on CPU here) goes through the same batched path."""
    import bitsandbytes as bnb

    from pytest_llmeval.backends.hf import HFBackend

    b = HFBackend(_spec(load_in_4bit=True))
    b.load()
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in b.model.modules())
    batched = [c.text for c in b.generate_batch([_req(p) for p in PROMPTS])]
    alone = [b.generate_batch([_req(p)])[0].text for p in PROMPTS]
    assert all(t.strip() for t in batched)
    assert batched == alone


def test_peft_adapter_changes_the_output(base_backend, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from pytest_llmeval.backends.hf import HFBackend

    base = AutoModelForCausalLM.from_pretrained(materialize("smollm2"))
    cfg = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, cfg).save_pretrained(tmp_path / "adapter")
    with_adapter = HFBackend(_spec(adapter=str(tmp_path / "adapter")))
    out_a = [c.text for c in with_adapter.generate_batch([_req(p) for p in PROMPTS])]
    out_b = [c.text for c in base_backend.generate_batch([_req(p) for p in PROMPTS])]
    assert out_a != out_b
    assert with_adapter.identity() != base_backend.identity()
    # The backend folds the adapter into the weights; the unmerged PeftModel says the same.
    from peft import PeftModel

    unmerged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(materialize("smollm2")), str(tmp_path / "adapter")
    )
    assert not isinstance(with_adapter.model, PeftModel)
    base_backend_model = base_backend.model
    try:
        base_backend.model = unmerged.eval()
        out_unmerged = [c.text for c in base_backend.generate_batch([_req(p) for p in PROMPTS])]
    finally:
        base_backend.model = base_backend_model
    assert out_unmerged == out_a


def test_adapter_trained_for_another_base_is_refused(tmp_path):
    from pytest_llmeval.backends.hf import HFBackend

    adapter = tmp_path / "a"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (adapter / "llmeval_adapter.json").write_text(
        json.dumps({"base_model": "meta-llama/Meta-Llama-3-8B-Instruct"})
    )
    b = HFBackend(_spec(adapter=str(adapter)))
    with pytest.raises(ModelCallError, match="trained for base model 'meta-llama/Meta-Llama-3-8B-Instruct'"):
        b.load()


def test_missing_adapter_fails_fast_with_a_clear_message(pytester):
    pytester.makefile(
        ".yaml",
        models="models:\n  m:\n    type: hf\n    path: 'embedded:smollm2'\n    adapter: nowhere/adapter\n",
    )
    pytester.path.joinpath("cases.jsonl").write_text('{"id": "a", "prompt": "hi"}\n')
    pytester.makepyfile(
        "from pytest_llmeval import dataset\n@dataset('cases.jsonl')\ndef test_x(case, completion):\n    pass\n"
    )
    r = pytester.runpytest("--model", "m", "--models-file", "models.yaml")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(
        ["*model 'm' cannot run here: needs the adapter nowhere/adapter, which does not exist*"]
    )


def test_starter_eval_runs_for_real(pytester):
    root = Path(__file__).resolve().parents[1]
    for name in ("cases.jsonl", "prompt.md", "test_starter.py"):
        pytester.path.joinpath(name).write_text((root / "evals" / "starter" / name).read_text())
    pytester.path.joinpath("models.yaml").write_text((root / "evals" / "models.yaml").read_text())
    r = pytester.runpytest(
        "--model", "smollm2", "--models-file", "models.yaml", "--cache", "off", "--no-metrics"
    )
    outcomes = r.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 4 and "error" not in outcomes
    r.stdout.fnmatch_lines(["*test_starter.py::test_name_age [[]smollm2[]]: n=4 pass rate*"])


def test_interrupted_conversion_leaves_nothing_trusted(tmp_path):
    env = {**os.environ, "LLMEVAL_MODEL_CACHE": str(tmp_path)}
    code = "from pytest_llmeval.backends.embedded import materialize; materialize()"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
    # Kill it once the conversion has started writing into its temporary folder.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(tmp_path.glob(".smollm2-v1.tmp-*")):
        time.sleep(0.2)
    time.sleep(2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "smollm2-v1" / MARKER).exists()
    # The next run cleans up the dead process's leftovers and converts.
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "smollm2-v1" / MARKER).is_file()
    assert not list(tmp_path.glob(".smollm2-v1.tmp-*"))
    assert "converting embedded model smollm2" in out.stderr


def test_two_models_load_at_once_in_a_fresh_process():
    """Two lanes load their models in threads as the first thing a process does with transformers.

    transformers resolves its names lazily; concurrent first imports once failed with
    "cannot import name 'AutoModelForCausalLM'" and errored every item of one model.
    """
    code = (
        "import threading\n"
        "from pytest_llmeval.backends.hf import HFBackend\n"
        "from pytest_llmeval.models import parse_models\n"
        "specs = parse_models({'models': {n: {'type': 'hf', 'path': 'embedded:smollm2'} for n in 'ab'}})\n"
        "errors = []\n"
        "def load(name):\n"
        "    try:\n"
        "        HFBackend(specs[name]).load()\n"
        "    except BaseException as e:\n"
        "        errors.append(repr(e))\n"
        "threads = [threading.Thread(target=load, args=(n,)) for n in 'ab']\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "print('ERRORS', errors)\n"
    )
    materialize("smollm2")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ERRORS []" in out.stdout, out.stdout[-2000:]
