"""Process-group helpers and the watchdog that keeps vLLM from outliving its owner.

vLLM's API server spawns an engine-core process (and that one a worker). When
the API server is killed with SIGKILL, those children are *not* stopped: they
are re-parented to init and keep their memory and CPU for good. And
``PR_SET_PDEATHSIG`` only reaches a direct child, not its descendants. So the
server runs in its own process group, and this tiny stdlib-only watchdog,
started beside it in yet another session, kills the whole group when

* its owner dies, however it dies (the owner holds the write end of a pipe;
  the kernel closes it on any exit, SIGKILL included, and we read EOF), or
* the API server itself exits (a crash must not leave the engine behind).

Run as ``python -I .../pytest_llmeval/backends/watchdog.py PGID FD`` (by path, so that it does not
depend on the plugin being importable in the child's environment).
Linux-only in what it reads (``/proc``); elsewhere it falls back to signals.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [state, ppid, pgrp, ...]."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (a dead child nobody has reaped yet)."""
    if Path("/proc").is_dir():
        fields = _stat_fields(pid)
        return fields is not None and fields[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    if not Path("/proc").is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def kill_group(pgid: int, grace: float = 10.0, reap: object = None) -> bool:
    """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL what is left.

    ``reap`` (a callable) is called while waiting so that an owner can collect
    its own dead child. Returns True if the group ended without SIGKILL.
    """
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if callable(reap):
            reap()
        if not group_pids(pgid):
            return True
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return False


def _log(msg: str) -> None:
    print(f"\n[llmeval.watchdog pid={os.getpid()}] {msg}", file=sys.stderr, flush=True)


def watch(pgid: int, fd: int, poll_s: float = 0.5, grace: float = 5.0) -> int:
    """Block until the owner is gone or the server leader exits; then kill the group."""
    # The owner handles Ctrl-C and stops the server itself; we must outlive that.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    reason = ""
    while not reason:
        ready, _, _ = select.select([fd], [], [], poll_s)
        if ready and not os.read(fd, 64):
            reason = "owner closed the pipe (stopped the server or died)"
        elif not pid_alive(pgid):
            reason = f"server process {pgid} exited"
    if group_pids(pgid):
        _log(f"{reason}; stopping what is left of process group {pgid}")
        kill_group(pgid, grace=grace)
    return 0


if __name__ == "__main__":
    sys.exit(watch(int(sys.argv[1]), int(sys.argv[2])))
