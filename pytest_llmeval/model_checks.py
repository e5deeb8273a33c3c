"""What the model types share to say whether a model can run here, and to name its weights.

Each check raises :class:`ModelUnavailable` with a one-line reason (``--list-models``
prints it; a session skips or errors that model's items with it). The fingerprints
name local weights and adapters in cache identities, so retrained weights never
replay stale completions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from .errors import ModelUnavailable


def _has_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def path_fingerprint(path: str) -> str:
    """A cheap identity of local weights: the embedded name, or safetensors names, sizes and times."""
    from .backends.embedded import EMBEDDED_MODELS, is_embedded

    if is_embedded(path):
        return path + ":" + ",".join(sorted(EMBEDDED_MODELS))
    p = Path(path)
    if p.is_dir():
        st = [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in sorted(p.glob("*.safetensors"))]
        return hashlib.sha256(repr(st).encode()).hexdigest()[:16]
    return path


def adapter_identity(adapter: str) -> str:
    """A hash of an adapter directory's files (retraining invalidates cached completions)."""
    from .backends.embedded import dir_hash

    p = Path(adapter)
    return dir_hash(p) if p.is_dir() else adapter


def check_extra(extra: str, modules: tuple[str, ...]) -> None:
    """Raise ModelUnavailable naming the pip extra when one of ``modules`` is not installed."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelUnavailable(
            f"needs the {extra} extra ({', '.join(missing)} not installed): pip install 'pytest-llmeval[{extra}]'"
        )


def check_key(env: str | None) -> None:
    """Raise ModelUnavailable when the API key variable ``env`` is unset."""
    if env and not os.environ.get(env):
        raise ModelUnavailable(f"needs {env} (set it in the environment or in .env)")


def check_embedded(ref: str | None) -> bool:
    """For ``embedded:NAME``: raise ModelUnavailable if its package is missing; True if embedded."""
    from .backends.embedded import EmbeddedModelError, gguf_path, is_embedded

    if not ref or not is_embedded(ref):
        return False
    try:
        gguf_path(ref.split(":", 1)[1])
    except EmbeddedModelError as e:
        raise ModelUnavailable(str(e)) from None
    return True


def check_local_weights(ref: str | None) -> None:
    """Raise ModelUnavailable when ``ref`` names weights that are not on this machine."""
    if not ref or check_embedded(ref) or Path(ref).exists():
        return
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(ref, "config.json"), str):
            return
    except Exception:
        pass
    raise ModelUnavailable(
        f"needs the weights of {ref!r} on this machine (not a local directory nor in the Hugging Face "
        "cache; nothing is downloaded at run time)"
    )


def check_adapter(adapter: str | None) -> None:
    """Raise ModelUnavailable when the adapter directory does not exist yet."""
    if adapter and not Path(adapter).is_dir():
        raise ModelUnavailable(
            f"needs the adapter {adapter}, which does not exist: train it with "
            f"'python -m finetune --task json_extraction --base-model smollm2 --output {adapter}'"
        )
