"""Atomic checkpoints (write, then rename) and the encoder export.

The export is ``encoder.safetensors`` (the encoder's weights), ``encoder.json`` (how to
build it again: its registry node with the data's values filled in, the input it reads, the
representation the evaluation used) and, for a timm or torchvision encoder, that library's
own model's weights ``backbone.safetensors``. :func:`selfsup.load_encoder` reads them back.

A checkpoint is data, never code: it holds tensors, numbers, strings and plain containers
only, and is loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
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
ENCODER_MANIFEST_NAME = "encoder.json"
BACKBONE_NAME = "backbone.safetensors"
#: Version of ``encoder.json``'s layout.
MANIFEST_FORMAT = 1


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
    _save_state_dict(encoder.state_dict(), path)


def _save_state_dict(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    # the same weights give the same bytes (and hash) in any process: safetensors keeps its
    # metadata in a hash map whose order changes between processes, so it holds one key only.
    # Tensors that share memory (tied weights) are refused by safetensors: each gets its own copy.
    seen: set[int] = set()
    tensors = {}
    for k, v in sorted(state.items()):
        v = v.detach().cpu().contiguous()
        key = v.untyped_storage().data_ptr() if v.numel() else -1
        tensors[k] = v.clone() if key in seen else v
        seen.add(key)
    metadata = {"format": "pt"}
    _write_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


# --------------------------------------------------------------------------- encoder.json
def _plain(value: Any) -> Any:
    """``value`` with tuples as lists and tensors / numpy numbers as Python numbers (JSON-safe)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (torch.Tensor, np.generic)):
        return value.item()
    return value


def _encoder_node(encoder: nn.Module, config: dict[str, Any], context: dict[str, Any], registry: Any) -> dict | None:
    """The registry node that builds ``encoder`` again, data parameters filled in from
    ``context``; None when none is known (then the objective is rebuilt to get it).

    The node is ``objective.encoder`` from the resolved config; when the pipeline left the
    encoder to the objective's default, the registry entry of the encoder's class, kept
    only if an encoder built from it has the same state-dict keys and shapes.
    """
    from ..config import CONTEXT_KEYS, build, parameters_of
    from ..errors import SelfsupError

    objective_node = config.get("objective")
    node = objective_node.get("encoder") if isinstance(objective_node, dict) else None
    guessed = node is None
    if isinstance(node, str):
        node = {"name": node}
    if guessed:
        names = [e.name for e in registry.list("encoder") if e.factory is type(encoder)]
        if not names:
            return None
        node = {"name": names[0]}
    if not isinstance(node, dict) or not isinstance(node.get("name"), str):
        return None
    try:
        entry = registry.get("encoder", node["name"])
    except SelfsupError:
        return None
    node = dict(node)
    params, _ = parameters_of(entry.factory)
    for key in CONTEXT_KEYS:
        if key in params and key not in node and key in context:
            node[key] = context[key]
    node = _plain(node)
    if guessed:
        try:
            with torch.random.fork_rng(devices=[]):
                rebuilt = build(registry, "encoder", node, "objective.encoder", context=context)
        except Exception:
            return None
        ours = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
        if {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} != ours:
            return None
    return node


@torch.no_grad()
def _layer_names(encoder: nn.Module, context: dict[str, Any]) -> list[str]:
    """The names ``encoder.layer_outputs`` offers (one image through it, in eval mode), or []."""
    layer_outputs = getattr(encoder, "layer_outputs", None)
    if not callable(layer_outputs) or "in_channels" not in context or "image_size" not in context:
        return []
    param = next(iter(encoder.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    size = int(context["image_size"])
    was_training = encoder.training
    encoder.eval()
    try:
        outputs = layer_outputs(torch.zeros(1, int(context["in_channels"]), size, size, device=device))
        return [str(name) for name in outputs]
    except Exception:
        return []
    finally:
        encoder.train(was_training)


def encoder_manifest(objective: nn.Module, context: dict[str, Any], config: dict[str, Any],
                     registry: Any = None) -> dict[str, Any]:
    """What ``encoder.json`` holds for ``objective``'s encoder (see :func:`write_encoder_manifest`)."""
    encoder = getattr(objective, "encoder", None)
    image = "in_channels" in context and "image_size" in context
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "exported": "encoder" if isinstance(encoder, nn.Module) else "objective",
        "objective": type(objective).__name__,
        "encoder": None,
        "context": _plain(dict(context)),
        "input": ({"channels": int(context["in_channels"]), "image_size": int(context["image_size"]),
                   "value_range": [0, 1]} if image else None),
        "layers": [],
        "embed_layer": "global",
        "library": None,
    }
    if not isinstance(encoder, nn.Module):
        return manifest
    if registry is None:
        from ..plugin_manager import default_registry

        registry = default_registry()
    manifest["encoder"] = _encoder_node(encoder, config or {}, dict(context), registry)
    manifest["layers"] = _layer_names(encoder, context)
    embed_layer = getattr(objective, "embed_layer", None)  # DIM: code, fc or conv
    if isinstance(embed_layer, str) and embed_layer != "code":
        manifest["embed_layer"] = embed_layer
    library = encoder.library_model() if callable(getattr(encoder, "library_model", None)) else None
    if library is not None:
        manifest["library"] = {"name": library.library, "model": library.model, "kwargs": _plain(library.kwargs),
                               "changes": dict(library.changes), "weights": BACKBONE_NAME}
    return manifest


def write_encoder_manifest(objective: nn.Module, context: dict[str, Any], config: dict[str, Any], run_dir: Path,
                           registry: Any = None) -> dict[str, Any]:
    """Write ``encoder.json`` beside ``encoder.safetensors`` (and ``backbone.safetensors``
    for an encoder that is a timm or torchvision model); returns the manifest.

    objective: the trained objective (its ``encoder`` is what was exported); context: the
    data's values (``DataSplits.context()``); config: the resolved pipeline (``config.yaml``).

    ``encoder.json``::

        format       1
        exported     "encoder", or "objective" when the objective has no separate encoder
        encoder      the encoder's registry node, data parameters filled in (null: unknown,
                     rebuild the objective from config.yaml to get the encoder)
        context      the data's values that filled data-dependent parameters
        input        {channels, image_size, value_range: [0, 1]} (null for multimodal data)
        layers       the names encoder.layer_outputs(x) offers ([] when it has none)
        embed_layer  the representation the evaluation used: "global" or a layer's name
        library      null, or {name: timm | torchvision, model, kwargs, changes, weights}
    """
    run_dir = Path(run_dir)
    manifest = encoder_manifest(objective, context, config, registry)
    encoder = getattr(objective, "encoder", None)
    if manifest["library"] is not None and isinstance(encoder, nn.Module):
        _save_state_dict(encoder.library_model().module.state_dict(), run_dir / BACKBONE_NAME)
    text = json.dumps(manifest, indent=2) + "\n"
    _write_atomically(run_dir / ENCODER_MANIFEST_NAME, lambda tmp: Path(tmp).write_text(text))
    return manifest
