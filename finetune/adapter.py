"""The adapter directory: atomic installation, ``llmeval_adapter.json`` metadata, base-model checks.

An adapter directory is what peft writes (``adapter_config.json`` and
``adapter_model.safetensors``, loadable by ``PeftModel.from_pretrained`` and by
vLLM's ``--lora-modules``) plus our metadata file.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from pytest_llmeval.fsutil import temp_sibling

from .errors import FinetuneError

METADATA_FILE = "llmeval_adapter.json"
METADATA_VERSION = 1


def adapter_metadata(path: str | Path) -> dict[str, Any]:
    """The ``llmeval_adapter.json`` of an adapter directory.

    Raises :class:`FinetuneError` if the directory is not an adapter trained here.
    """
    p = Path(path)
    meta_file = p / METADATA_FILE
    if not p.is_dir():
        raise FinetuneError(
            f"adapter {p} does not exist; train it with 'python -m finetune ... --output {p}'"
        )
    if not meta_file.is_file():
        raise FinetuneError(
            f"adapter {p} has no {METADATA_FILE}; it was not trained with 'python -m finetune'"
        )
    try:
        data = json.loads(meta_file.read_text(encoding="utf-8"))
    except ValueError as e:
        raise FinetuneError(f"{meta_file}: invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise FinetuneError(f"{meta_file}: expected a JSON object")
    return data


def _same_weights(a: str, b: str) -> bool:
    # Fingerprints look like "<reference>@<hash>"; the same weights at another path still match.
    if a == b:
        return True
    if "@" in a and "@" in b:
        return a.rsplit("@", 1)[1] == b.rsplit("@", 1)[1]
    return False


def check_adapter_base(adapter_dir: str | Path, base_fingerprint: str) -> str | None:
    """A readable error if the adapter was trained on another base model, else None.

    ``base_fingerprint`` is ``pytest_llmeval.backends.embedded.model_fingerprint(ref)``
    of the base the caller is about to load. Adapters without our metadata
    (trained elsewhere) cannot be checked and pass.
    """
    try:
        meta = adapter_metadata(adapter_dir)
    except FinetuneError:
        return None
    trained = meta.get("base_fingerprint")
    if not trained or _same_weights(str(trained), str(base_fingerprint)):
        return None
    return (
        f"adapter {adapter_dir} was trained on base model {meta.get('base_model')!r} "
        f"(fingerprint {trained}), but the base model here has fingerprint {base_fingerprint}; "
        f"load it on {meta.get('base_model')!r} or retrain it with "
        f"'python -m finetune --task {meta.get('task', 'TASK')} --base-model BASE --output {adapter_dir}'"
    )


def git_commit(cwd: str | Path = ".") -> dict[str, Any]:
    """The current commit and whether the work tree has changes (None outside git)."""

    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that shape the adapter."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in (
        "torch",
        "transformers",
        "peft",
        "bitsandbytes",
        "accelerate",
        "safetensors",
        "pytest-llmeval",
    ):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            out[dist] = None
    return out


def write_metadata(directory: Path, meta: dict[str, Any]) -> None:
    """Write ``llmeval_adapter.json`` into ``directory``."""
    meta = {"llmeval_adapter_version": METADATA_VERSION, **meta}
    (directory / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=False, default=str) + "\n")


def temp_dir_for(output: Path) -> Path:
    """A fresh temporary sibling of ``output`` (same filesystem, so the final rename is atomic).

    Also removes any ``.NAME.*-PID`` sibling (temporary or set-aside old adapter) left by a
    run whose process is gone.
    """
    return temp_sibling(output, f".{output.name}.*-*")


def install(tmp: Path, output: Path) -> None:
    """Move a complete adapter from ``tmp`` to ``output``, replacing an older one only now.

    The old adapter is renamed aside first and removed after the new one is in
    place, so at no point is a half-written adapter visible at ``output``.
    """
    if not (tmp / "adapter_config.json").is_file() or not (tmp / METADATA_FILE).is_file():
        raise FinetuneError(f"internal error: {tmp} is not a complete adapter; {output} left unchanged")
    old = None
    if output.exists():
        if output.is_dir() and not (output / "adapter_config.json").is_file() and any(output.iterdir()):
            raise FinetuneError(
                f"output {output} exists and is not an adapter directory; choose another --output or remove it"
            )
        old = output.parent / f".{output.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        output.rename(old)
    try:
        tmp.rename(output)
    except OSError:
        if old is not None:
            old.rename(output)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
