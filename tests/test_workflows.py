"""The GitHub workflow files validate against the workflow schema (offline, vendored schema)."""

from __future__ import annotations

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
