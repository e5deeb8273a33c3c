"""What the whole-run benchmarks share: the JSON-extraction project they time, and the timing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK = ROOT / "evals" / "json_extraction"

TEST = """from pytest_llmeval import dataset, scorers


@dataset("cases.jsonl", prompt="prompt.md", max_tokens={max_tokens}, main_score="field_accuracy")
def test_extraction(case, completion):
    with scorers.soft():
        data = scorers.json_valid(completion.text)
        scorers.matches_schema(data, case["schema"])
        scorers.field_accuracy(data, case["expected"], at_least=1.0)
"""


def extraction_project(work: Path, n: int, max_tokens: int) -> list[str]:
    """Write a pytest project over the first ``n`` JSON-extraction cases into ``work``; return their ids."""
    lines = (TASK / "cases.jsonl").read_text().splitlines()[:n]
    (work / "cases.jsonl").write_text("\n".join(lines) + "\n")
    shutil.copy(TASK / "prompt.md", work / "prompt.md")
    (work / "test_bench.py").write_text(TEST.format(max_tokens=max_tokens))
    (work / "pytest.ini").write_text("[pytest]\n")
    return [json.loads(line)["id"] for line in lines]


def timed(
    cmd: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    ok_codes: tuple[int, ...] = (0, 1),
    timeout: float | None = None,
) -> tuple[float, str]:
    """Wall time and output (stdout, then stderr) of a whole process. By default exit 0 or 1 (tests
    failed) is a run; a benchmark whose tests must all pass passes ``ok_codes=(0,)``. Any other
    exit stops the benchmark with the process's output."""
    started = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)
    elapsed = time.perf_counter() - started
    if out.returncode not in ok_codes:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return elapsed, out.stdout + out.stderr


def extrapolate(t_1: float, t_k: float, k: int, n: int) -> float:
    """Whole-process time for ``n`` cases from runs of 1 and ``k``: start-up once, per-case time n times."""
    return t_1 + (n - 1) * (t_k - t_1) / max(1, k - 1)
