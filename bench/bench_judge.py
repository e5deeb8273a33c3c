"""The judge as a pipeline stage against the serial judge (issue #20), side by side in one run.

(a) ``server``: a loopback OpenAI-wire judge server (tests/fakes.py) that answers in ``--service-time``
    (300 ms), ``max_concurrency: 16``; the model under test is another loopback server that answers at
    once. 150 judged items through pytest and the plugin, cache off: the declared judge as a pipeline
    stage against ``--no-judge-stage`` (one judge call per test body). The judge stage is timed where
    the judge server sees it: from the first judge request's arrival to the last answer.
(b) ``qa``: the Q&A suite (evals/qa) cold on the embedded smollm2, judged by smollm2 itself, each side
    with its own fresh response cache: pipeline against ``--no-judge-stage``. Whole-process wall times
    and the verdict (judge score and reasoning) of every item, compared. ``--cases N`` runs a
    deterministic subset (every k-th case) when a full run does not fit.

    python bench/bench_judge.py server                 # (a), about a minute
    python bench/bench_judge.py qa                     # (b), 150 cases: tens of minutes on 2 cores
    python bench/bench_judge.py qa --cases 30          # (b) on every 5th case
    python bench/bench_judge.py qa --calibration       # (b) with the judge's measurement on both sides
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fakes import FakeOpenAIServer, echo_last_user  # noqa: E402

SERVER_TEST = """\
from pytest_llmeval import JudgeSpec, dataset, scorers


@dataset("cases.jsonl", max_tokens=16, judge=JudgeSpec("rubric.md", fields=("question",)))
def test_judged(case, completion, judge):
    with scorers.soft():
        judge.score(completion.text)
"""


def run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    """Wall time and output of a whole pytest process (exit 0 or 1 is a run; anything else stops)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    took = time.perf_counter() - started
    if out.returncode not in (0, 1):
        raise SystemExit(
            f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-2000:]}"
        )
    return took, out.stdout


def verdicts(junit: Path) -> dict[str, tuple[Any, Any]]:
    """case id -> (judge score, judge explanation) from a JUnit XML file the plugin wrote."""
    out = {}
    for m in re.finditer(r'property name="llmeval" value="([^"]*)"', junit.read_text()):
        rec = json.loads(html.unescape(m.group(1)))
        judged = [s for s in rec["scores"] if s["name"] == "judge"]
        out[rec["case_id"]] = (
            (judged[0]["value"], judged[0]["explanation"]) if judged else (None, rec.get("error"))
        )
    return out


# -- (a) a judge server ------------------------------------------------------------------------
def bench_server(n: int, service_time: float, concurrency: int) -> None:
    answered: list[float] = []
    arrived: list[float] = []

    def judge_reply(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
        arrived.append(time.monotonic() - service_time)  # the server slept service_time before this
        answered.append(time.monotonic())
        return "SCORE: 4\nREASONING: Fine."

    with (
        FakeOpenAIServer(echo_last_user) as model,
        FakeOpenAIServer(judge_reply, delay=service_time) as judge,
    ):
        work = Path(tempfile.mkdtemp(prefix="bench-judge-"))
        (work / "pytest.ini").write_text("[pytest]\n")
        (work / "rubric.md").write_text("5 - right\n1 - wrong\n")
        (work / "test_bench.py").write_text(SERVER_TEST)
        rows = [{"id": f"c{i:04d}", "prompt": f"w{i}", "question": f"q{i}"} for i in range(n)]
        (work / "cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (work / "models.yaml").write_text(
            "models:\n"
            f"  fake: {{type: openai, model: fake, base_url: '{model.base_url}', max_concurrency: {concurrency}}}\n"
            f"  judge: {{type: openai, model: judge, base_url: '{judge.base_url}', max_concurrency: {concurrency}}}\n"
        )
        base = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "--models-file", "models.yaml"]
        base += [
            "--model",
            "fake",
            "--judge",
            "judge",
            "--cache",
            "off",
            "--no-metrics",
            "--no-llmeval-report",
        ]
        spans = {}
        for name, extra in (("pipeline", []), ("serial", ["--no-judge-stage"])):
            answered.clear()
            arrived.clear()
            wall, out = run([*base, *extra], work)
            assert len(answered) == n, f"{name}: {len(answered)} judge calls for {n} items\n{out[-2000:]}"
            spans[name] = (max(answered) - min(arrived), wall)
            print(f"{name:>9}: judge stage {spans[name][0]:.2f}s, whole process {wall:.2f}s ({n} items)")
        shutil.rmtree(work, ignore_errors=True)
    ratio = spans["serial"][0] / spans["pipeline"][0]
    print(
        f"judge stage, serial / pipeline: {ratio:.1f}x (goal >= 10x); whole process {spans['serial'][1] / spans['pipeline'][1]:.1f}x"
    )


# -- (b) the Q&A suite on smollm2 --------------------------------------------------------------
def bench_qa(cases: int | None, keep: bool, calibration: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-judge-qa-"))
    qa = work / "qa"
    shutil.copytree(ROOT / "evals" / "qa", qa, ignore=shutil.ignore_patterns("train.jsonl", "__pycache__"))
    if (
        not calibration
    ):  # the judge's measurement costs both sides the same; left out, the ratio is the stage's
        (qa / "judge_calibration.jsonl").unlink()
    lines = (qa / "cases.jsonl").read_text().splitlines()
    if cases and cases < len(lines):
        step = len(lines) / cases
        lines = [lines[int(i * step)] for i in range(cases)]
        (qa / "cases.jsonl").write_text("\n".join(lines) + "\n")
    (work / "pytest.ini").write_text("[pytest]\n")
    what = "with" if calibration else "without"
    print(
        f"Q&A suite: {len(lines)} cases, smollm2 answers and judges, each side cold, {what} the calibration"
    )
    results = {}
    for name, extra in (("pipeline", []), ("serial", ["--no-judge-stage"])):
        cmd = [sys.executable, "-m", "pytest", "qa", "-q", "-p", "no:randomly", "--model", "smollm2"]
        cmd += ["--judge", "smollm2", "--models-file", str(ROOT / "evals" / "models.yaml")]
        cmd += ["--cache-path", str(work / f"cache-{name}.sqlite"), "--no-metrics", "--no-llmeval-report"]
        cmd += [f"--junitxml={work / name}.xml", "-o", "junit_family=xunit1", *extra]
        wall, out = run(cmd, work)
        agreement = [ln.strip() for ln in out.splitlines() if "judge agreement with people" in ln]
        results[name] = (wall, verdicts(work / f"{name}.xml"))
        print(f"{name:>9}: {wall:.1f}s; {agreement[0] if agreement else 'no agreement line'}")
    (tp, vp), (ts, vs) = results["pipeline"], results["serial"]
    same = sum(1 for k in vs if vp.get(k) == vs[k])
    print(f"wall time pipeline / serial: {tp / ts:.2f} (goal <= 0.5); identical verdicts {same}/{len(vs)}")
    for k in sorted(vs):
        if vp.get(k) != vs[k]:
            print(f"  differs {k}: pipeline {vp.get(k)!r} vs serial {vs[k]!r}")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept: {work}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("server", help="(a) a loopback judge server answering in --service-time")
    s.add_argument("--items", type=int, default=150)
    s.add_argument("--service-time", type=float, default=0.3)
    s.add_argument("--concurrency", type=int, default=16)
    q = sub.add_parser("qa", help="(b) the Q&A suite cold on smollm2 with the embedded judge")
    q.add_argument("--cases", type=int, default=None, help="a deterministic subset: every k-th case")
    q.add_argument("--keep", action="store_true", help="keep the work folder (JUnit XML of both sides)")
    q.add_argument(
        "--calibration", action="store_true", help="keep judge_calibration.jsonl: both sides measure"
    )
    args = ap.parse_args()
    if args.what == "server":
        bench_server(args.items, args.service_time, args.concurrency)
    else:
        bench_qa(args.cases, args.keep, args.calibration)


if __name__ == "__main__":
    main()
