"""The vLLM servers a session starts: one per distinct base model, with the adapters it needs.

The controller calls :func:`start_servers` at session start. It starts one
server per distinct base model (``model`` plus ``server_args``) with the union
of the adapters the selected models need, and returns model name -> base URL;
xdist workers get those URLs and only send requests. :func:`stop_servers` at
session end stops them. :data:`ENV_SERVERS` tells workers each server's pid
and log file, so a dead server is reported with its log everywhere.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ConfigError, ModelCallError

if TYPE_CHECKING:
    from .vllm_process import VLLMServer
    from .vllm_server import VLLMServerSpec

#: JSON {base_url: {"pid": int, "log": path, "model": str}} of the servers this session started;
#: set in the controller's environment before xdist starts its workers, who inherit it.
ENV_SERVERS = "LLMEVAL_VLLM_SERVERS"

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


def plan_servers(specs: list[VLLMServerSpec]) -> list[ServerPlan]:
    """Group ``vllm_server`` specs without a ``base_url`` (or ``replicas``) into one server per base model.

    An adapter name that two specs map to different directories is a
    :class:`ConfigError`; so are two different fixed ports for one server.
    """
    plans: dict[tuple[str, tuple[str, ...]], ServerPlan] = {}
    for spec in specs:
        if spec.type != "vllm_server" or spec.base_url or spec.replicas:  # served elsewhere
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
    from .embedded import resolve_weights
    from .vllm_process import VLLMServer

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


def start_servers(specs: list[VLLMServerSpec]) -> dict[str, str]:
    """Start (or reuse) one server per base model for ``specs``; return model name -> base URL.

    Called once in the controller at session start. Blocks until every server
    answers; on failure stops what it started and raises :class:`ModelCallError`
    quoting the failing server's log. Specs that have a ``base_url`` keep it.
    """
    from .vllm_process import ServerError

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
