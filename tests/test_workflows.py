"""The GitHub workflow files validate against the workflow schema (offline, vendored schema)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")


def _validate(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHECK, "--builtin-schema", "vendor.github-workflows", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_workflows_are_valid():
    files = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert {f.name for f in files} >= {"tests.yml", "evals.yml"}
    out = _validate(*files)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_validator_rejects_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps: nope\n")
    assert _validate(bad).returncode != 0


@pytest.mark.parametrize("workflow", ["tests.yml", "evals.yml"])
def test_workflows_use_the_readme_commands(workflow):
    text = (ROOT / ".github" / "workflows" / workflow).read_text()
    assert "make setup" in text
    assert ("make test" in text) if workflow == "tests.yml" else ("make eval" in text)


# -- the sharded eval job, run here -------------------------------------------------------------
def _job(name: str) -> dict:
    import yaml

    return yaml.safe_load((ROOT / ".github" / "workflows" / "evals.yml").read_text())["jobs"][name]


def _step(job: dict, uses: str) -> dict:
    return next(s for s in job["steps"] if str(s.get("uses", "")).startswith(uses))


def test_the_merge_job_gates_shard_folders_from_a_test_run(pytester: pytest.Pytester) -> None:
    """The shard job's upload, the merge job's download and its commands, as the workflow writes them."""
    import json
    import os

    from _fake_openai import FakeOpenAIServer, write_suite, wrong_for

    shard_job, merge_job = _job("shard"), _job("merge")
    shards = shard_job["strategy"]["matrix"]["shard"]
    upload = _step(shard_job, "actions/upload-artifact")["with"]
    download = _step(merge_job, "actions/download-artifact")["with"]
    after_download = merge_job["steps"].index(_step(merge_job, "actions/download-artifact")) + 1
    commands = [s["run"] for s in merge_job["steps"][after_download:] if "run" in s]
    assert any("llmeval merge" in c for c in commands)
    assert all("${{" not in c for c in commands)  # nothing for this test to stand in for

    root = pytester.path
    bin_dir = root / ".venv" / "bin"  # the commands call .venv/bin/llmeval, as `make setup` installs it
    bin_dir.mkdir(parents=True)
    (bin_dir / "llmeval").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pytest_llmeval "$@"\n')
    (bin_dir / "llmeval").chmod(0o755)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cases = [(f"c{i:02d}", f"w{i}") for i in range(30)]
    run_args = ["--model", "fake", "--models-file", "models.yaml", "--cache", "off", "-p", "no:cacheprovider"]
    with FakeOpenAIServer() as srv:
        write_suite(root, srv.base_url, cases)
        (root / "evals").mkdir()
        pytester.runpytest(*run_args, "--save-baseline", "evals/baseline.json", "--output", "runs/base")
        srv.responder = wrong_for(*[w for _, w in cases[:12]])  # 12 of 30 now fail: a regression
        for k in shards:
            out = pytester.runpytest(
                *run_args, "--shard", f"{k}/{len(shards)}", "--output", f"runs/shard-{k}"
            )
            assert out.ret == 0
            # upload-artifact of the shard's folder, then download-artifact by pattern:
            # every artifact lands in <path>/<artifact name>/.
            name = upload["name"].replace("${{ matrix.shard }}", str(k))
            assert download["pattern"].rstrip("*") in name
            (root / download["path"]).mkdir(parents=True, exist_ok=True)
            (root / f"runs/shard-{k}").rename(root / download["path"] / name)

    results = [
        subprocess.run(["bash", "-e", "-c", c], cwd=root, env=env, capture_output=True, text=True)
        for c in commands
    ]
    merge = next(r for c, r in zip(commands, results, strict=True) if "llmeval merge" in c)
    assert merge.returncode == 1, merge.stdout + merge.stderr  # the regression fails the job
    assert "gate: FAILED" in merge.stdout and "merged 3 shards" in merge.stdout
    assert all(r.returncode == 0 for c, r in zip(commands, results, strict=True) if "llmeval merge" not in c)
    merged = root / "data" / "runs" / "ci"  # what the upload step takes
    summary = json.loads((merged / "summary.json").read_text())
    assert summary["run"]["n_results"] == 30 and summary["verdict"]["passed"] is False
    assert len(summary["run"]["merged_from"]) == len(shards)
    assert {"report.html", "results.jsonl", "metrics.prom", "results.csv"} <= {
        p.name for p in merged.iterdir()
    }
    assert "llmeval_gate_passed 0" in (merged / "metrics.prom").read_text()


# -- the pull request's eval job, run here ------------------------------------------------------
def test_the_pull_request_runs_the_gated_starter_suite():
    import yaml

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "tests.yml").read_text())
    job = workflow["jobs"]["evals-smoke"]
    assert "pull_request" in workflow[True] and job["if"] == "github.event_name == 'pull_request'"
    run = next(s["run"] for s in job["steps"] if "pytest evals/starter" in s.get("run", ""))
    assert "--model smollm2" in run and "--baseline evals/baseline.json" in run and "--llmeval-summary" in run
    baseline = json.loads((ROOT / "evals" / "baseline.json").read_text())
    assert "smollm2" in baseline["entries"]["evals/starter/test_starter.py::test_name_age"]  # a gate to pass


@pytest.mark.slow
def test_the_pull_request_eval_step_writes_its_summary(tmp_path):
    """The job's eval command, run as the workflow runs it, on a copy of the project: the job summary
    file gets the verdict and the table, and the gate passes against the committed baseline."""
    import os
    import shutil

    import yaml
    from markdown_it import MarkdownIt

    job = yaml.safe_load((ROOT / ".github" / "workflows" / "tests.yml").read_text())["jobs"]["evals-smoke"]
    run = next(s["run"] for s in job["steps"] if "pytest evals/starter" in s.get("run", ""))
    for part in ("evals/starter", "evals/baseline.json", "evals/models.yaml", "pyproject.toml"):
        src, dst = ROOT / part, tmp_path / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    shim = tmp_path / ".venv" / "bin" / "pytest"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pytest "$@"\n')
    shim.chmod(0o755)
    step_summary = tmp_path / "step_summary.md"
    env = {
        **os.environ,
        "GITHUB_STEP_SUMMARY": str(step_summary),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(["bash", "-e", "-c", run], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = step_summary.read_text()
    assert (tmp_path / "data" / "runs" / "smoke" / "summary.md").read_text() == text
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    heading = next(tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open")
    assert heading == "LLM evals: gate PASSED ✅"
    cells = [t.content for t in tokens if t.type == "inline"]
    assert r"evals/starter/test\_starter.py::test\_name\_age" in cells and "smollm2" in cells
