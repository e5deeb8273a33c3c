"""The documentation's files and commands, executed: the docs cannot rot.

Every ``bash`` block line in docs/adding_tasks.md and docs/quickstart.md is
either run here (in a scratch copy of the project) or listed in
``RUN_ELSEWHERE`` with the place that runs it.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Commands that this file does not run, and where they are exercised instead.
RUN_ELSEWHERE = {
    "make eval": ".ci/run runs it (on evals/starter) against the committed baseline",
    "make test": ".ci/run runs it",
    'pip install "pytest-llmeval[hf]"': "tests/test_guest.py installs the wheel into fresh environments",
    "llmeval fetch-model": "tests/test_guest.py::test_fetch_model_takes_the_gguf_out_of_the_wheel_without_installing_it",
}


def blocks(doc: str) -> list[tuple[str | None, str, str]]:
    """(file annotation, language, body) for every fenced block of a markdown file."""
    text = (ROOT / "docs" / doc).read_text()
    out = []
    for m in re.finditer(r"(?:<!-- file: (\S+) -->\n)?```(\w*)\n(.*?)```", text, re.DOTALL):
        out.append((m.group(1), m.group(2), m.group(3)))
    return out


def commands(doc: str) -> list[str]:
    cmds = []
    for _, lang, body in blocks(doc):
        if lang == "bash":
            for line in body.splitlines():
                line = line.split("  #")[0].strip()
                if line and not line.startswith("#"):
                    cmds.append(line)
    return cmds


def scratch_project(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    (proj / "evals").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", proj / "pyproject.toml")
    shutil.copy(ROOT / "evals" / "models.yaml", proj / "evals" / "models.yaml")
    shutil.copytree(ROOT / "evals" / "starter", proj / "evals" / "starter")
    shutil.copy(ROOT / "evals" / "baseline.json", proj / "evals" / "baseline.json")
    return proj


def run(cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(cmd)
    if argv[0].startswith(".venv/bin/") or argv[0] in ("pytest", "llmeval"):
        argv[0] = str(BIN / argv[0].removeprefix(".venv/bin/"))
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_adding_tasks_walkthrough_produces_a_gated_task(tmp_path):
    proj = scratch_project(tmp_path)
    files = [(name, body) for name, _, body in blocks("adding_tasks.md") if name]
    assert {n for n, _ in files} == {
        "evals/capitals/cases.jsonl",
        "evals/capitals/prompt.md",
        "evals/capitals/test_capitals.py",
    }
    for name, body in files:
        (proj / name).parent.mkdir(parents=True, exist_ok=True)
        (proj / name).write_text(body)
    cmds = commands("adding_tasks.md")
    assert len(cmds) == 3
    for cmd in cmds:
        out = run(cmd, proj)
        assert out.returncode in (0, 1), out.stdout[-3000:] + out.stderr[-3000:]
        assert "test_capitals.py::test_capital [smollm2]: n=3" in out.stdout
    baseline = json.loads((proj / "evals" / "baseline.json").read_text())
    assert "evals/starter/test_starter.py::test_name_age" in baseline["entries"]  # other tasks' entries kept
    assert set(baseline["entries"]["evals/capitals/test_capitals.py::test_capital"]["smollm2"]["cases"]) == {
        "fr",
        "jp",
        "au",
    }
    assert "gate: PASSED" in out.stdout and out.returncode == 0


@pytest.mark.slow
def test_quickstart_commands_run(tmp_path):
    proj = scratch_project(tmp_path)
    for name, _, body in blocks("quickstart.md"):
        if name:
            (proj / name).parent.mkdir(parents=True, exist_ok=True)
            (proj / name).write_text(body)
    cmds = commands("quickstart.md")
    ran = 0
    for cmd in cmds:
        if cmd in RUN_ELSEWHERE:
            continue
        out = run(cmd, proj)
        assert out.returncode == 0, f"{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        if cmd.startswith("pytest evals/names"):
            assert "test_names.py::test_name [smollm2]: n=3" in out.stdout, out.stdout[-3000:]
        if cmd.startswith("pytest --list-models"):
            assert re.search(r"my-vllm\s+openai\s+ready", out.stdout) and "[built-in]" in out.stdout
        ran += 1
    assert ran >= 4


def test_every_readme_command_is_accounted_for():
    readme = (ROOT / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)```", readme, re.DOTALL).group(1).split("\n")
    lines = [ln.split("#")[0].strip() for ln in first if ln.strip()]
    assert lines == ["make eval", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make eval" in ci


# Each command in the README's later bash blocks -> the test that runs it (or its parts) for real.
README_COMMANDS = {
    ".venv/bin/pytest --list-models": "tests/test_plugin_core.py::test_list_models_reports_readiness",
    ".venv/bin/pytest evals/json_extraction --model smollm2,smollm2-json-lora": "tests/test_gate.py::test_models_compared_with_the_paired_test_in_one_run",
    ".venv/bin/pytest evals --model smollm2 --baseline evals/baseline.json --tolerance pass_rate:-0.02": "tests/test_gate.py::test_noise_within_tolerance_passes",
    ".venv/bin/pytest evals --model smollm2 --save-baseline": "tests/test_gate.py::test_baseline_file_format",
    ".venv/bin/python -m finetune --task json_extraction --base-model smollm2 --output data/lora_adapters/json_v1": "tests/test_finetune.py::test_sigkill_mid_training_then_resume_completes",
    ".venv/bin/python -m serving --model smollm2 --adapters json-lora=data/lora_adapters/json_v1 --port 8001": "tests/test_serving.py::test_cli_prints_url_and_stops_cleanly_on_sigint",
    ".venv/bin/llmeval runs": "tests/test_export_cli.py::test_runs_lists_both",
    ".venv/bin/pytest evals --model smollm2 --shard 2/3 --output data/runs/shard-2": "tests/test_shards.py::test_merged_shards_give_the_unsharded_verdict",
    ".venv/bin/llmeval merge data/runs/shard-* --baseline evals/baseline.json": "tests/test_shards.py::test_merged_shards_give_the_unsharded_verdict",
    ".venv/bin/llmeval cache explain 'test_extraction[smollm2-easy-001]'": "tests/test_trust.py::test_two_endpoints_with_one_model_name_never_share_cached_answers",
    ".venv/bin/llmeval compare --baseline latest~1 --current latest": "tests/test_export_cli.py::test_compare_shows_changed_cases_and_p_value",
    ".venv/bin/llmeval export --format prometheus --run latest --output data/llmeval.prom": "tests/test_export_cli.py::test_export_prometheus_textfile",
    ".venv/bin/llmeval table --run latest --unmeasured gpt-4o-mini,llama3-8b-base": "tests/test_results_table.py::test_table_of_a_server_run_with_prices",
    ".venv/bin/pytest evals/json_extraction --model smollm2-sampled --repeat 3": "tests/test_repeats.py::test_one_item_per_case_with_one_record_per_sample_each_with_its_seed",
    ".venv/bin/llmeval flaky --last 10": "tests/test_repeats.py::test_metrics_db_keeps_a_row_per_sample_and_llmeval_flaky_lists_cases_across_runs",
}


def test_every_later_readme_command_names_the_test_that_runs_it():
    """A command added to the README without a test that exercises it fails here."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.DOTALL)[1:]
    cmds = [ln.split("#")[0].strip() for b in blocks for ln in b.splitlines() if ln.split("#")[0].strip()]
    assert cmds, "the README has usage commands"
    missing = [c for c in cmds if c not in README_COMMANDS]
    assert not missing, f"README commands with no test named in README_COMMANDS: {missing}"
    for cmd in cmds:
        path, name = README_COMMANDS[cmd].split("::")
        assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.MULTILINE), README_COMMANDS[cmd]


def _doc_keys(section: str) -> set[str]:
    text = (ROOT / "docs" / "models.md").read_text()
    table = text.split(f"<!-- keys: {section} -->", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE))


def test_models_reference_lists_every_key_of_every_type():
    from pytest_llmeval.models import ModelSpec, builtin_type

    common = ModelSpec.allowed_keys()
    assert _doc_keys("common") == common
    for name in ("hf", "openai", "vllm_server"):
        assert _doc_keys(name) == builtin_type(name).spec_class.allowed_keys() - common, name


def test_models_reference_examples_are_valid_models_files():
    import yaml

    from pytest_llmeval.models import BUILTIN_MODELS, parse_models

    text = (ROOT / "docs" / "models.md").read_text()
    examples = re.findall(r"<!-- example -->\n```yaml\n(.*?)```", text, re.DOTALL)
    assert len(examples) == 4
    for body in examples:
        assert parse_models(yaml.safe_load(body), "models.md")
    for name in BUILTIN_MODELS:
        assert f"| `{name}` |" in text
