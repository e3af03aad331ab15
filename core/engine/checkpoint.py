"""Atomic checkpoints (write, then rename) and the encoder export.

A checkpoint is data, never code: it holds tensors, numbers, strings and plain containers
only, and is loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import SelfsupError

CHECKPOINT_NAME = "checkpoint.pt"
ENCODER_NAME = "encoder.safetensors"


def _write_atomically(path: Path, write: Any) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename over it; on failure (a
    full disk, a read-only folder) the temporary file is removed, ``path`` is left as it was,
    and the error names the file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.chmod(tmp, 0o644)  # readable like every other run file (some writers create 0600)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise SelfsupError(f"could not write {path}: {reason}. Nothing was replaced; free disk space or "
                           "check the folder's permissions, then resume.") from None


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename over it."""
    _write_atomically(path, lambda tmp: torch.save(obj, tmp))


def load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SelfsupError(f"no checkpoint at {path}; is this a run folder written by 'selfsup train'?")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise SelfsupError(
            f"{path} is not a plain tensor checkpoint: loading it would run code from the file, so it is "
            "refused. Checkpoints written by selfsup hold tensors, numbers and strings only."
        ) from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SelfsupError(f"could not read checkpoint {path}: {first}") from None


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every random state a run draws from."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.frombuffer(np.random.get_state()[1].tobytes(), dtype=np.uint8).copy()),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": repr(random.getstate()),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    import ast

    torch.set_rng_state(state["torch"])
    keys = np.frombuffer(state["numpy"].numpy().tobytes(), dtype=np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    random.setstate(ast.literal_eval(state["python"]))
    for name, g in generators.items():
        if name in state["generators"]:
            g.set_state(state["generators"][name])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def export_encoder(encoder: nn.Module, path: Path) -> None:
    """Write the encoder's weights alone as safetensors (mode 0644, deterministic bytes), for downstream use."""
    from safetensors.torch import save_file

    # the same weights give the same bytes (and hash) in any process: safetensors keeps its
    # metadata in a hash map whose order changes between processes, so it holds one key only
    tensors = {k: v.detach().cpu().contiguous() for k, v in sorted(encoder.state_dict().items())}
    metadata = {"format": "pt"}
    _write_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
