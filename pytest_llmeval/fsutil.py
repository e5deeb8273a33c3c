"""Temporary sibling directories for atomic installs (write aside, rename into place)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def temp_sibling(target: Path, stale_pattern: str | None = None) -> Path:
    """A fresh, empty ``.NAME.tmp-PID`` sibling of ``target``: same filesystem, so a rename is atomic.

    First removes leftovers of interrupted runs: siblings matching ``stale_pattern``
    (default ``.NAME.tmp-*``) whose trailing ``-PID`` names a process that is gone.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(stale_pattern or f".{target.name}.tmp-*"):
        try:
            pid = int(stale.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(stale, ignore_errors=True)
        except PermissionError:
            pass
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp
