"""Periodic training checkpoints in ``<output>.checkpoints/step-NNNNNN/``.

Each checkpoint is written into a temporary sibling and renamed into place
when complete, so a run killed at any moment (SIGKILL included) leaves only
whole checkpoints for ``--resume`` to find.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import FinetuneError

_STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"


def checkpoint_root(output: str | Path) -> Path:
    """Where the checkpoints of the run writing ``output`` live."""
    output = Path(output)
    return output.parent / f"{output.name}.checkpoints"


@dataclass
class Checkpoint:
    """A complete checkpoint on disk."""

    path: Path
    step: int

    def state(self) -> dict[str, Any]:
        """The JSON state (step, losses, config, data hash, ...)."""
        return json.loads((self.path / STATE_FILE).read_text())


def list_checkpoints(root: Path) -> list[Checkpoint]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        m = _STEP_DIR.match(d.name)
        if m and d.is_dir() and (d / STATE_FILE).is_file():
            out.append(Checkpoint(d, int(m.group(1))))
    return sorted(out, key=lambda c: c.step)


def latest_checkpoint(root: Path) -> Checkpoint | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop draws from (dropout, shuffling)."""
    import torch

    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    import torch

    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    root: Path, step: int, model: Any, optimizer: Any, state: dict[str, Any], keep: int
) -> Path:
    """Write a checkpoint for ``step`` atomically and prune all but the newest ``keep``."""
    import torch
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        weights = {k: v.detach().to("cpu").contiguous() for k, v in get_peft_model_state_dict(model).items()}
        save_file(weights, str(tmp / "adapter_model.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "rng": rng_state()}, tmp / "optimizer.pt")
        # The state file goes last: list_checkpoints() only trusts directories that have it.
        (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=1, default=str))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
    return final


def load_checkpoint(ckpt: Checkpoint, model: Any, optimizer: Any) -> dict[str, Any]:
    """Load adapter weights, optimizer and RNG state into a freshly built model; return the JSON state."""
    import torch
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    try:
        weights = load_file(str(ckpt.path / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(model, weights)
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise FinetuneError(
                f"checkpoint {ckpt.path} does not fit this model ({len(unexpected)} unexpected weights, "
                f"e.g. {unexpected[0]}); run without --resume to start over"
            )
        blob = torch.load(ckpt.path / "optimizer.pt", map_location="cpu", weights_only=False)
        optimizer.load_state_dict(blob["optimizer"])
        set_rng_state(blob["rng"])
        return ckpt.state()
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise FinetuneError(
            f"cannot load checkpoint {ckpt.path}: {e}; run without --resume to start over"
        ) from None


def clear_checkpoints(root: Path) -> None:
    """Remove every checkpoint of a run (after success, or when starting over)."""
    shutil.rmtree(root, ignore_errors=True)
