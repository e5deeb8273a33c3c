"""finetune/: config, data and masking, checkpoints and resume, the adapter directory, errors.

The slow tests train for real (QLoRA: 4-bit NF4 base + LoRA) on the embedded
SmolLM2 with a tiny task (six short rows, a one-line prompt), so a step takes
a fraction of a second and a whole run a few seconds plus the model load.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from finetune import FinetuneConfig, FinetuneError, adapter_metadata, build_config, check_adapter_base
from finetune.adapter import METADATA_FILE, install
from finetune.checkpoints import checkpoint_root, list_checkpoints
from finetune.cli import main
from finetune.config import CONFIG_DIR
from finetune.tasks import IGNORE_INDEX, Example, tokenize_example
from finetune.trainer import micro_batches, step_batches, total_steps

ROOT = Path(__file__).resolve().parents[1]

ROWS = [
    ("Name: Ann Lee. City: Oslo.", {"name": "Ann Lee", "city": "Oslo"}),
    ("Bo Chen lives in Lima.", {"name": "Bo Chen", "city": "Lima"}),
    ("Contact Eva Ruiz (Quito).", {"name": "Eva Ruiz", "city": "Quito"}),
    ("Tom Hart, based in Cairo.", {"name": "Tom Hart", "city": "Cairo"}),
    ("City: Pune; name: Raj Iyer", {"name": "Raj Iyer", "city": "Pune"}),
    ("Mia Sato moved to Kyoto.", {"name": "Mia Sato", "city": "Kyoto"}),
]
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "city": {"type": "string"}}}
PROMPT = "--- system ---\nReturn JSON only.\n--- user ---\n{{ schema | json }}\n{{ text }}\n"


def make_task(root: Path, rows: list[tuple[str, dict]] = ROWS) -> Path:
    """A json_extraction task folder with a short prompt; returns the evals dir."""
    folder = root / "evals" / "json_extraction"
    folder.mkdir(parents=True)
    lines = [
        json.dumps({"id": f"t{i}", "text": text, "schema": SCHEMA, "expected": exp})
        for i, (text, exp) in enumerate(rows)
    ]
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "prompt.md").write_text(PROMPT)
    return root / "evals"


def tiny_config(evals: Path, output: Path, **extra) -> dict:
    cfg = {
        "task": "json_extraction",
        "base_model": "embedded:smollm2",
        "evals_dir": str(evals),
        "output": str(output),
        "max_steps": 6,
        "batch_size": 2,
        "learning_rate": 2e-3,
        "warmup_steps": 0,
        "lr_scheduler": "constant",
        "dropout": 0.0,
        "rank": 8,
        "alpha": 16,
        "max_seq_len": 256,
        "save_steps": 3,
        "log_every": 1,
        "keep_checkpoints": True,
        # Tiny batches gain nothing from a second thread, and under xdist the other core is busy.
        "num_threads": 1,
        "time_budget_min": 0.0,
        # The QLoRA path on all layers (what GPUs use); the CPU default is unquantized, top layers only.
        "load_in_4bit": True,
        "lora_top_layers": 0,
    }
    cfg.update(extra)
    return cfg


# --------------------------------------------------------------------------- config


def test_shipped_configs_load_and_validate():
    cpu = build_config(CONFIG_DIR / "cpu.yaml")
    gpu = build_config(CONFIG_DIR / "gpu_24gb.yaml")
    assert build_config() == cpu  # cpu.yaml is the default
    # A fixed run (same steps, same seed: the same adapter anywhere); the time budget is only a cap and
    # does not bend the lr schedule. Unquantized on a CPU (bench/bench_train.py), QLoRA on a GPU.
    assert cpu.max_steps > 0 and cpu.time_budget_min > 0 and not cpu.fit_schedule_to_budget
    assert not cpu.load_in_4bit and cpu.lora_top_layers > 0
    assert gpu.load_in_4bit and gpu.compute_dtype == "bfloat16" and gpu.gradient_checkpointing
    for cfg in (cpu, gpu):
        assert not {"embed_tokens", "lm_head"} & set(cfg.target_modules)


def test_compute_dtype_auto_follows_the_hardware(monkeypatch):
    from finetune import trainer

    cfg = FinetuneConfig(task="json_extraction", output="x")
    assert cfg.compute_dtype == "auto"
    monkeypatch.setattr(trainer, "_cpu_has_bf16", lambda: True)
    assert trainer.compute_dtype(cfg, "cpu") == "bfloat16"
    monkeypatch.setattr(trainer, "_cpu_has_bf16", lambda: False)
    assert trainer.compute_dtype(cfg, "cpu") == "float32"
    cfg.compute_dtype = "float32"  # an explicit choice is kept
    monkeypatch.setattr(trainer, "_cpu_has_bf16", lambda: True)
    assert trainer.compute_dtype(cfg, "cpu") == "float32"


def test_overrides_apply_in_order(tmp_path):
    own = tmp_path / "own.yaml"
    own.write_text("rank: 32\nlearning_rate: 1e-4\n")
    cfg = build_config(
        own, overrides={"rank": 8, "max_steps": 5}, sets=["rank=4", "target_modules=q_proj,v_proj"]
    )
    assert (cfg.rank, cfg.max_steps, cfg.learning_rate) == (4, 5, 1e-4)
    assert cfg.target_modules == ["q_proj", "v_proj"]
    assert build_config(sets=["lr_scheduler=linear", "load_in_4bit=false"]).load_in_4bit is False


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["bogus=1"], "unknown config key 'bogus'"),
        (["rank=abc"], "'rank' must be an integer"),
        (["rank=0"], "'rank' must be at least 1"),
        (["target_modules=q_proj,lm_head"], "vLLM rejects"),
        (["norank"], "expected key=value"),
    ],
)
def test_bad_config_values_are_named(sets, message):
    with pytest.raises(FinetuneError, match=message):
        build_config(sets=sets)


def test_missing_config_file_is_an_error_not_a_silent_default(monkeypatch, tmp_path, capsys):
    from finetune import config

    with pytest.raises(
        FinetuneError, match=r"config file .*nope.yaml does not exist; shipped configs in .*cpu.yaml"
    ):
        build_config(tmp_path / "nope.yaml")
    monkeypatch.setattr(config, "DEFAULT_CONFIG", tmp_path / "cpu.yaml")  # an install that lost its default
    with pytest.raises(FinetuneError, match="cpu.yaml does not exist"):
        build_config()
    monkeypatch.undo()
    assert main(["--task", "json_extraction", "--output", str(tmp_path / "a"), "--config", "gpu24.yaml"]) == 2
    assert "gpu24.yaml does not exist" in _one_error_line(capsys)


def test_adapter_training_note_reaches_the_paired_eval_line(tmp_path):
    from pytest_llmeval.summary import adapter_training_note

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    assert adapter_training_note({"adapter": str(adapter)}) is None  # no metadata: nothing to say
    (adapter / METADATA_FILE).write_text(json.dumps({"training_note": None}))
    assert adapter_training_note({"adapter": str(adapter)}) is None  # a complete run
    note = "stopped by time budget at step 66 of 300 (time_budget_min=13)"
    (adapter / METADATA_FILE).write_text(json.dumps({"training_note": note}))
    assert adapter_training_note({"adapter": str(adapter)}) == note
    assert adapter_training_note({"adapter": None}) is None and adapter_training_note(None) is None


# --------------------------------------------------------------------------- CLI errors


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("finetune: error: ")
    return err[0]


def test_unknown_task_is_one_clear_line(capsys, tmp_path):
    assert main(["--task", "nope", "--output", str(tmp_path / "a")]) == 2
    assert "unknown task 'nope'; known tasks: json_extraction, qa" in _one_error_line(capsys)


def test_missing_train_file_is_one_clear_line(capsys, tmp_path):
    missing = tmp_path / "none.jsonl"
    assert (
        main(["--task", "json_extraction", "--train-file", str(missing), "--output", str(tmp_path / "a")])
        == 2
    )
    line = _one_error_line(capsys)
    assert str(missing) in line and "does not exist" in line and "--train-file" in line


@pytest.mark.parametrize(
    ("base", "says"),
    [
        ("no-such-model", "not found"),
        ("someorg/not-cached-model", "not in the local Hugging Face cache"),
        ("gpt-4o-mini", "cannot be finetuned"),
    ],
)
def test_unusable_base_model_is_one_clear_line(capsys, tmp_path, base, says):
    evals = make_task(tmp_path)
    argv = ["--task", "json_extraction", "--base-model", base, "--output", str(tmp_path / "a")]
    argv += ["--set", f"evals_dir={evals}", "--models-file", str(ROOT / "evals" / "models.yaml")]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert repr(base) in line and says in line


def test_output_that_is_not_an_adapter_is_refused(capsys, tmp_path):
    evals = make_task(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("x")
    assert (
        main(["--task", "json_extraction", "--set", f"evals_dir={evals}", "--output", str(tmp_path / "out")])
        == 2
    )
    assert "not an adapter directory" in _one_error_line(capsys)


def test_cli_process_exit_status_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "finetune", "--task", "nope", "--output", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "unknown task 'nope'" in proc.stderr


# --------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from pytest_llmeval.backends.embedded import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("embedded:smollm2"))


@pytest.mark.slow
def test_labels_mask_prompt_tokens(tokenizer):
    messages = [
        {"role": "system", "content": "Return JSON only."},
        {"role": "user", "content": "Ann Lee, Oslo"},
        {"role": "assistant", "content": '{"name": "Ann Lee"}'},
    ]
    ids, labels = tokenize_example(tokenizer, messages)
    prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    assert ids[: len(prompt)] == prompt  # the eval's prompt, token for token
    assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    trained = [t for t in labels if t != IGNORE_INDEX]
    # The target and its end-of-turn token; nothing the template appends after it.
    assert tokenizer.decode(trained) == '{"name": "Ann Lee"}<|im_end|>'
    assert labels[len(prompt) : len(prompt) + len(trained)] == trained


def test_batches_are_deterministic_cover_every_example_and_resume_in_place():
    examples = [Example(f"e{i}", [1] * (5 + i % 7), [1] * (5 + i % 7)) for i in range(23)]
    cfg = FinetuneConfig(batch_size=4, gradient_accumulation=2, max_steps=20)
    epoch0 = micro_batches(examples, cfg, 0)
    assert epoch0 == micro_batches(examples, cfg, 0)
    assert sorted(i for b in epoch0 for i in b) == list(range(23))
    assert epoch0 != micro_batches(examples, cfg, 1)
    full = step_batches(examples, cfg, 0)
    from_five = step_batches(examples, cfg, 5)
    first_eight = [next(full) for _ in range(8)]
    assert first_eight[5:] == [next(from_five) for _ in range(3)]
    assert total_steps(23, FinetuneConfig(batch_size=4, epochs=2.0)) == 12


def test_prefix_groups_follow_the_prompt_tree():
    from finetune.trainer import prefix_groups

    system = list(range(100, 140))
    a = [system + [1, 2, 3] + [50 + i] * 3 for i in range(9)]  # schema A, then each text
    b = [system + [7, 8] + [60 + i] * 2 for i in range(9)]  # schema B
    c = [system + [200 + i] for i in range(3)]  # prompts that differ right after the system part
    examples = [Example(str(i), ids, ids) for i, ids in enumerate(a + b + c)]
    groups = prefix_groups(examples, min_size=4)
    assert sorted(sorted(g) for g in groups) == [list(range(9)), list(range(9, 18)), list(range(18, 21))]
    cfg = FinetuneConfig(batch_size=4, share_prefix=True)
    for batch in micro_batches(examples, cfg, 0):
        assert len({examples[i].input_ids[40] for i in batch}) == 1 or batch[0] >= 18  # one schema per batch


@pytest.mark.slow
def test_fast_loss_and_shared_prefix_equal_the_full_forward(tokenizer):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from finetune.trainer import assistant_loss, collate
    from pytest_llmeval.backends.embedded import resolve_model_path

    model = AutoModelForCausalLM.from_pretrained(resolve_model_path("embedded:smollm2"))
    # Non-zero LoRA B, so every LoRA weight gets a gradient worth comparing.
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    model = get_peft_model(model, lora)
    exs = []
    for text, exp in ROWS[:3]:
        msgs = [
            {"role": "system", "content": "Return JSON only."},
            {"role": "user", "content": json.dumps(SCHEMA) + "\n" + text},
            {"role": "assistant", "content": json.dumps(exp)},
        ]
        exs.append(Example("x", *tokenize_example(tokenizer, msgs)))
    batch = collate(exs, [0, 1, 2], tokenizer.pad_token_id, "cpu", share_prefix=True)
    assert batch["prefix_len"] >= 32

    def loss_and_grad(b, fast):
        model.zero_grad()
        loss = assistant_loss(model, b, fast=fast)
        loss.backward()
        return float(loss.detach()), torch.cat(
            [p.grad.flatten() for p in model.parameters() if p.requires_grad]
        )

    shared = loss_and_grad(batch, True)
    unshared = loss_and_grad({**batch, "prefix_len": 0}, True)
    full = loss_and_grad(batch, False)
    for loss, grad in (shared, unshared):
        assert abs(loss - full[0]) < 1e-4
        assert torch.allclose(grad, full[1], atol=1e-4)


# --------------------------------------------------------------------------- adapter dir


def _fake_adapter(path: Path, fingerprint: str | None) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    if fingerprint is not None:
        meta = {"base_model": "embedded:smollm2", "base_fingerprint": fingerprint, "task": "json_extraction"}
        (path / METADATA_FILE).write_text(json.dumps(meta))
    return path


def test_check_adapter_base(tmp_path):
    a = _fake_adapter(tmp_path / "a", "embedded:smollm2@aaaa")
    assert check_adapter_base(a, "embedded:smollm2@aaaa") is None
    assert check_adapter_base(a, "/elsewhere/same/weights@aaaa") is None
    problem = check_adapter_base(a, "meta-llama/Meta-Llama-3-8B-Instruct")
    assert problem and "trained on base model 'embedded:smollm2'" in problem and "retrain" in problem
    assert check_adapter_base(_fake_adapter(tmp_path / "b", None), "anything") is None
    with pytest.raises(FinetuneError, match="does not exist"):
        adapter_metadata(tmp_path / "missing")


def test_install_replaces_only_with_a_complete_adapter(tmp_path):
    out = _fake_adapter(tmp_path / "out", "old@1")
    incomplete = tmp_path / ".out.tmp-1"
    incomplete.mkdir()
    (incomplete / "adapter_config.json").write_text("{}")
    with pytest.raises(FinetuneError):
        install(incomplete, out)
    assert adapter_metadata(out)["base_fingerprint"] == "old@1"
    new = _fake_adapter(tmp_path / ".out.tmp-2", "new@2")
    install(new, out)
    assert adapter_metadata(out)["base_fingerprint"] == "new@2"
    assert not new.exists() and sorted(p.name for p in tmp_path.iterdir()) == [".out.tmp-1", "out"]


# --------------------------------------------------------------------------- real training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real QLoRA run (6 steps, checkpoint every 3) and its resumption to 8 steps.

    Under pytest-xdist the workers share one run (the documented file-lock
    pattern), so the training happens once per session, not once per worker.
    """
    from filelock import FileLock

    from finetune import train

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    record = shared / "finetune-trained.json"
    with FileLock(str(shared / "finetune-trained.lock")):
        if record.is_file():
            data = json.loads(record.read_text())
        else:
            root = shared / "finetune-trained"
            evals = make_task(root)
            logs: list[str] = []
            cfg = tiny_config(evals, root / "adapter")
            out = train(cfg, log=logs.append)
            first = adapter_metadata(out)
            checkpoints = [c.step for c in list_checkpoints(checkpoint_root(out))]
            out = train({**cfg, "max_steps": 8}, resume=True, log=logs.append)
            data = {
                "evals": str(evals),
                "out": str(out),
                "first": first,
                "checkpoints": checkpoints,
                "logs": logs,
            }
            record.write_text(json.dumps(data))
    return {**data, "evals": Path(data["evals"]), "out": Path(data["out"])}


@pytest.mark.slow
def test_loss_decreases(trained):
    losses = [loss for _, loss in trained["first"]["loss_history"]]
    assert len(losses) == 6
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 * 0.8, losses
    assert trained["first"]["final_loss"] < trained["first"]["first_loss"]


@pytest.mark.slow
def test_progress_lines(trained):
    step_lines = [m for m in trained["logs"] if m.startswith("step ")]
    assert step_lines[0].startswith("step 1/6 loss ")
    assert all(" steps/s eta " in m for m in step_lines)
    # the run's length is estimated once, after the first steps, before most of the work
    assert any(
        m.startswith("expect about ") and "s/step over the first 3); done around" in m
        for m in trained["logs"]
    )
    assert any(m.startswith("resuming from ") and "at step 6/8" in m for m in trained["logs"])


@pytest.mark.slow
def test_checkpoints_written_and_resume_continues_the_step_count(trained):
    assert trained["checkpoints"] == [3, 6]
    meta = adapter_metadata(trained["out"])
    assert meta["resumed_from_step"] == 6 and meta["steps"] == 8
    assert len(meta["loss_history"]) == 8  # the first run's losses carried over
    assert [c.step for c in list_checkpoints(checkpoint_root(trained["out"]))] == [6, 8]


@pytest.mark.slow
def test_adapter_metadata_and_files(trained):
    from pytest_llmeval.backends.embedded import model_fingerprint

    out, meta = trained["out"], adapter_metadata(trained["out"])
    assert {p.name for p in out.iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
        METADATA_FILE,
    }
    train_file = trained["evals"] / "json_extraction" / "train.jsonl"
    assert meta["data_sha256"] == hashlib.sha256(train_file.read_bytes()).hexdigest()
    assert meta["base_model"] == "embedded:smollm2"
    assert meta["base_fingerprint"] == model_fingerprint("embedded:smollm2")
    assert meta["config"]["rank"] == 8 and meta["config"]["load_in_4bit"] is True
    assert meta["versions"]["peft"] and meta["versions"]["bitsandbytes"] and "commit" in meta["git"]
    assert meta["training_time_s"] > 0 and meta["examples"] == len(ROWS)
    assert check_adapter_base(out, model_fingerprint("embedded:smollm2")) is None
    peft_cfg = json.loads((out / "adapter_config.json").read_text())
    # What vLLM's --lora-modules accepts: projections only, no embed_tokens/lm_head.
    assert not peft_cfg.get("modules_to_save")
    assert set(peft_cfg["target_modules"]) <= {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert not list(out.parent.glob(f".{out.name}.*"))  # no temporary leftovers


@pytest.mark.slow
def test_adapter_loads_on_the_unquantized_base_and_changes_output(trained, tokenizer):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from pytest_llmeval.backends.embedded import resolve_model_path

    model = AutoModelForCausalLM.from_pretrained(resolve_model_path("embedded:smollm2"), dtype=torch.float32)
    prompts = [
        [
            {"role": "system", "content": "Return JSON only."},
            {"role": "user", "content": json.dumps(SCHEMA) + f"\n{t}"},
        ]
        for t in ("Ida Berg, Bergen.", "Name: Li Wu. City: Xian.")
    ]

    def greedy(m) -> list[str]:
        outs = []
        for msgs in prompts:
            ids = tokenizer.apply_chat_template(
                msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            with torch.inference_mode():
                gen = m.generate(
                    **ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id
                )
            outs.append(tokenizer.decode(gen[0, ids["input_ids"].shape[1] :]))
        return outs

    before = greedy(model)
    tuned = PeftModel.from_pretrained(model, str(trained["out"]))
    after = greedy(tuned)
    assert before != after, (before, after)


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_completes(tmp_path):
    evals = make_task(tmp_path)
    out = tmp_path / "adapter"
    # The kill/resume machinery does not depend on quantization; the unquantized base loads
    # in a fraction of the 4-bit load time, which keeps this two-process test short.
    args = [sys.executable, "-m", "finetune", "--task", "json_extraction", "--base-model", "embedded:smollm2"]
    args += ["--output", str(out), "--set", f"evals_dir={evals}", "--set", "load_in_4bit=false"]
    args += ["--batch-size", "2", "--max-seq-len", "256", "--save-steps", "2", "--rank", "4", "--lr", "1e-3"]
    args += ["--set", "num_threads=1", "--time-budget", "0"]
    root = checkpoint_root(out)
    proc = subprocess.Popen([*args, "--max-steps", "500"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list_checkpoints(root):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no checkpoint within 300s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # nothing half-written at the output
    last = list_checkpoints(root)[-1].step
    done = subprocess.run(
        [*args, "--max-steps", str(last + 2), "--resume"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"resuming from {root / f'step-{last:06d}'} at step {last}/{last + 2}" in done.stderr
    meta = adapter_metadata(out)
    assert meta["resumed_from_step"] == last and meta["steps"] == last + 2
    assert not root.exists()  # checkpoints are removed after success unless asked to keep them


@pytest.mark.slow
def test_time_budget_stop_is_said_in_the_log_and_the_metadata(tmp_path):
    from finetune import train

    evals = make_task(tmp_path)
    logs: list[str] = []
    cfg = tiny_config(
        evals, tmp_path / "adapter", load_in_4bit=False, time_budget_min=1e-6, keep_checkpoints=False
    )
    meta = adapter_metadata(train(cfg, log=logs.append))
    assert meta["steps"] == 1 and meta["stopped_by"] == "time_budget"
    assert meta["training_note"].startswith("stopped by time budget at step 1 of 6")
    assert any(m.startswith("WARNING: stopped by time budget at step 1 of 6") for m in logs)
    assert list_checkpoints(checkpoint_root(tmp_path / "adapter"))  # kept, so --resume can finish the run


@pytest.mark.slow
def test_two_runs_give_the_same_adapter(tmp_path):
    """Same config, same seed, same data: bit-identical LoRA weights (the CPU default's promise)."""
    from safetensors.torch import load_file

    from finetune import train

    evals = make_task(tmp_path)
    weights, logs = [], []
    for run in ("a", "b"):
        cfg = tiny_config(
            evals, tmp_path / run, load_in_4bit=False, lora_top_layers=2, max_steps=3, keep_checkpoints=False
        )
        out = train(cfg, log=logs.append)
        weights.append(load_file(str(out / "adapter_model.safetensors")))
        assert adapter_metadata(out)["training_note"] is None
    assert weights[0].keys() == weights[1].keys()
    assert all((weights[0][k] == weights[1][k]).all() for k in weights[0])
    layers = {int(k.split(".layers.")[1].split(".")[0]) for k in weights[0]}
    assert layers == {28, 29}  # lora_top_layers=2 of SmolLM2's 30
    assert any(m.startswith("training 3 steps of 2 x 1 examples (seed 42)") for m in logs)


def test_resume_refuses_other_settings(tmp_path):
    from finetune.trainer import _check_resume_state

    cfg = FinetuneConfig(task="json_extraction", output="x", rank=8)
    state = {"config": {**cfg.to_dict(), "rank": 16}, "data_sha256": "d", "base_fingerprint": "b"}
    base = type("B", (), {"fingerprint": "b", "reference": "embedded:smollm2"})()
    with pytest.raises(FinetuneError, match=r"rank=16 -> 8"):
        _check_resume_state(state, cfg, "d", base, tmp_path)
    state["config"]["rank"] = 8
    _check_resume_state({**state, "config": {**state["config"], "max_steps": 99}}, cfg, "d", base, tmp_path)
    with pytest.raises(FinetuneError, match="train file changed"):
        _check_resume_state(state, cfg, "other", base, tmp_path)


def test_config_yaml_documents_every_key():
    keys = set(yaml.safe_load((CONFIG_DIR / "cpu.yaml").read_text()))
    run_keys = {
        "task",
        "base_model",
        "output",
        "train_file",
        "prompt_file",
        "evals_dir",
        "models_file",
        "max_examples",
        "keep_checkpoints",
    }
    assert keys | run_keys == set(FinetuneConfig().to_dict())


@pytest.mark.slow
def test_quick_eval_gives_the_plugin_backends_outputs(trained):
    """quick_eval generates through the hf backend's code, so its outputs are the eval's outputs."""
    from finetune.quick_eval import evaluate
    from pytest_llmeval.backends.base import Request
    from pytest_llmeval.backends.hf import HFBackend
    from pytest_llmeval.dataset import load_cases
    from pytest_llmeval.models import parse_models
    from pytest_llmeval.prompts import load_template

    evals, adapter = trained["evals"], str(trained["out"])
    cases_file = evals / "json_extraction" / "train.jsonl"
    res = evaluate(
        "json_extraction",
        "smollm2",
        [adapter],
        cases_file=str(cases_file),
        evals_dir=str(evals),
        limit=3,
        batch_size=3,
        max_new_tokens=12,
        log=lambda _m: None,
    )
    template = load_template(evals / "json_extraction" / "prompt.md")
    requests = [
        Request.make(template.render(c.data, c.id), max_tokens=12) for c in load_cases(cases_file)[:3]
    ]
    outputs = {}
    for run, extra in (("base", {}), (adapter, {"adapter": adapter})):
        spec = parse_models({"models": {"m": {"type": "hf", "path": "embedded:smollm2", **extra}}})["m"]
        outputs[run] = [c.text for c in HFBackend(spec).generate_batch(requests)]
        assert [o["output"] for o in res["runs"][run]["outputs"]] == outputs[run]
    assert outputs["base"] != outputs[adapter]
    assert res["cases"] == 3 and set(res["runs"]) == {"base", adapter}
