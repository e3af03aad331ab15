"""Embeddings out: a finished run's encoder back as a module, and the embedding it computes.

    import selfsup
    from selfsup.export import embedding_function

    encoder = selfsup.load_encoder("runs/moco_digits")   # nn.Module in eval mode, on the CPU
    encoder.input_spec    # InputSpec(channels=1, image_size=8, value_range=(0.0, 1.0), layout='NCHW')
    embed = embedding_function(encoder)                  # float [B, 1, 8, 8] in [0, 1] -> [B, D]
    with torch.no_grad():
        z = embed(encoder.input_spec.prepare(uint8_images))

The encoder is built from the run's ``encoder.json`` (written at the end of training: the
encoder's registry node with the data's values filled in) or, for runs from before it,
from ``config.yaml`` and the dataset it names; its weights are ``encoder.safetensors``.
The ``selfsup embed`` command (:mod:`selfsup.embed_cli`) uses the same two functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ConfigError, DataError, SelfsupError

__all__ = ["InputSpec", "available_layers", "embedding_function", "load_encoder"]


@dataclass(frozen=True)
class InputSpec:
    """What a loaded encoder reads, exactly as the trainer fed it.

    The model reads float32 ``[N, channels, image_size, image_size]`` (layout NCHW) with
    values in ``value_range`` = [0, 1]: the trainer and the evaluation divide uint8 images
    by 255 and use float images as they are. No mean/std normalisation is used by this
    toolkit, so none is to be applied. Images of another size are resized (shorter side)
    and centre-cropped to ``image_size`` by the dataset factories (folders, shards).
    """

    channels: int
    image_size: int
    value_range: tuple[float, float] = (0.0, 1.0)
    layout: str = "NCHW"

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, S, S)`` of one input."""
        return (self.channels, self.image_size, self.image_size)

    def check(self, shape: tuple[int, ...], where: str) -> None:
        """Raise a :class:`DataError` naming both shapes when images ``(C, H, W)`` do not fit."""
        if tuple(int(d) for d in shape) != self.shape:
            c, s = self.channels, self.image_size
            found = "x".join(str(int(d)) for d in shape)
            raise DataError(
                f"{where}: the images are {found} (channels x height x width), but the encoder was trained on "
                f"{c}x{s}x{s} ({'grey' if c == 1 else 'RGB' if c == 3 else f'{c}-channel'} images of {s} pixels); "
                f"convert them to {c} channel(s) and {s}x{s} pixels first."
            )

    def prepare(self, images: Tensor) -> Tensor:
        """``[N, C, S, S]`` uint8 (0..255) or float (0..1) -> float32 in [0, 1], shape checked."""
        if images.dim() != 4:
            raise DataError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}.")
        self.check(tuple(images.shape[1:]), "images")
        return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


# --------------------------------------------------------------------------- loading
def _check_run_dir(run_dir: Path) -> None:
    from .engine import CONFIG_NAME, ENCODER_NAME

    if not run_dir.exists():
        raise SelfsupError(f"run folder {run_dir} does not exist; give the folder a `selfsup train` run wrote "
                           "(trainer.out_dir/<run name>, or the --run-dir it was given).")
    if not run_dir.is_dir():
        raise SelfsupError(f"{run_dir} is a file, not a run folder; give the folder a `selfsup train` run wrote.")
    if not (run_dir / CONFIG_NAME).is_file():
        raise SelfsupError(f"{run_dir} holds no {CONFIG_NAME}, so it is not a run folder written by "
                           "`selfsup train`; give the folder of a run.")
    if not (run_dir / ENCODER_NAME).is_file():
        raise SelfsupError(
            f"{run_dir} holds no {ENCODER_NAME}: the encoder is exported when training finishes, and this run has "
            f"not finished (or was stopped). Finish it with `selfsup train --resume {run_dir}`, then load it again."
        )


def _read_manifest(run_dir: Path) -> dict[str, Any] | None:
    from .engine.checkpoint import ENCODER_MANIFEST_NAME

    path = run_dir / ENCODER_MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SelfsupError(f"could not read {path}: {exc}. Delete it to rebuild the encoder from config.yaml "
                           "(slower: the dataset is read to learn the input size).") from None
    if not isinstance(manifest, dict) or "context" not in manifest:
        raise SelfsupError(f"{path} is not an encoder manifest written by selfsup; delete it to rebuild the encoder "
                           "from config.yaml.")
    return manifest


def _context(manifest: dict[str, Any]) -> dict[str, Any]:
    context = dict(manifest.get("context") or {})
    if isinstance(context.get("modality_shapes"), dict):
        context["modality_shapes"] = {k: tuple(v) for k, v in context["modality_shapes"].items()}
    return context


def _no_encoder(run_dir: Path, objective: str) -> SelfsupError:
    return SelfsupError(
        f"{run_dir}: the objective {objective} has no separate encoder, so encoder.safetensors holds the whole "
        "objective's weights and load_encoder has no encoder to return. Rebuild the objective with "
        "selfsup.engine.build_trainer(selfsup.engine.load_run_config(run_dir)) and load the file into "
        "trainer.objective (safetensors.torch.load_file), then call trainer.objective.embed."
    )


def _objective_node(run_dir: Path) -> Any:
    from .config import to_container
    from .engine import load_run_config

    return to_container(load_run_config(run_dir))["objective"]


def _build_from_manifest(run_dir: Path, manifest: dict[str, Any], registry: Any) -> nn.Module:
    from .config import build

    if manifest.get("exported") != "encoder":
        raise _no_encoder(run_dir, str(manifest.get("objective", "of this run")))
    context = _context(manifest)
    with torch.random.fork_rng(devices=[]):  # building draws random weights; leave the caller's RNG alone
        if manifest.get("encoder") is not None:
            return build(registry, "encoder", manifest["encoder"], "encoder.json: encoder", context=context)
        objective = build(registry, "objective", _objective_node(run_dir), "objective", context=context)
    encoder = getattr(objective, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise _no_encoder(run_dir, type(objective).__name__)
    return encoder


def _build_from_config(run_dir: Path, registry: Any) -> tuple[nn.Module, dict[str, Any]]:
    """The slow path for runs without ``encoder.json``: read the run's dataset for the data's
    values, build the objective, take its encoder."""
    from .config import build, to_container
    from .engine import load_run_config, settings_from_config
    from .engine.checkpoint import encoder_manifest

    cfg = load_run_config(run_dir)
    try:
        data = build(registry, "dataset", settings_from_config(cfg).data.dataset, "data.dataset")
    except SelfsupError as exc:
        raise SelfsupError(
            f"{run_dir} holds no encoder.json (a run from before it was written), so the input size is learnt by "
            f"reading the run's dataset from config.yaml, which failed: {exc}"
        ) from None
    context = data.context()
    node = to_container(cfg)
    with torch.random.fork_rng(devices=[]):
        objective = build(registry, "objective", node["objective"], "objective", context=context)
    encoder = getattr(objective, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise _no_encoder(run_dir, type(objective).__name__)
    return encoder, encoder_manifest(objective, context, node, registry)


def _load_weights(encoder: nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    from .engine.run_folder import checkpoint_mismatch

    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors' own error type for a damaged or foreign file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SelfsupError(f"could not read {path}: {first}. Train the run again, or restore the file.") from None
    try:
        encoder.load_state_dict(state)
    except RuntimeError as exc:
        raise SelfsupError(
            f"{path} does not fit the {type(encoder).__name__} built from the run's config: "
            f"{checkpoint_mismatch(exc)}. Was the file replaced, or the encoder's plugin changed since training?"
        ) from None


def load_encoder(run_dir: str | Path, device: str | torch.device = "cpu", registry: Any = None) -> nn.Module:
    """The trained encoder of the run in ``run_dir``, in eval mode, on ``device``.

    Built from the run's ``encoder.json`` (or, for older runs, from ``config.yaml`` and its
    dataset) and loaded with ``encoder.safetensors``. Attached attributes:

    - ``input_spec``: :class:`InputSpec` — float32 ``[N, C, S, S]`` in [0, 1], no mean/std
      normalisation (None for multimodal data);
    - ``embed_layer``: the representation the run's evaluation used (``"global"``, i.e.
      ``encoder(x).global_``, or a name of ``encoder.layer_outputs(x)``, e.g. DIM's ``fc``);
    - ``layer_names``: every representation :func:`embedding_function` can return.

    Raises :class:`~selfsup.errors.SelfsupError` naming the path for a folder that is not a
    finished run, and when the weights do not fit the built encoder.
    """
    from .engine import ENCODER_NAME

    run_dir = Path(run_dir)
    _check_run_dir(run_dir)
    if registry is None:
        from .plugin_manager import default_registry

        registry = default_registry()
    manifest = _read_manifest(run_dir)
    if manifest is not None:
        encoder = _build_from_manifest(run_dir, manifest, registry)
    else:
        encoder, manifest = _build_from_config(run_dir, registry)
    _load_weights(encoder, run_dir / ENCODER_NAME)
    encoder.eval().to(device)
    spec = manifest.get("input")
    encoder.input_spec = InputSpec(int(spec["channels"]), int(spec["image_size"])) if spec else None
    encoder.embed_layer = str(manifest.get("embed_layer") or "global")
    layers = [str(n) for n in manifest.get("layers") or []]
    encoder.layer_names = ("global", *[n for n in layers if n != "global"])
    return encoder


# --------------------------------------------------------------------------- embeddings
@torch.no_grad()
def available_layers(encoder: nn.Module) -> tuple[str, ...]:
    """The representations of ``encoder``: ``"global"`` and the names ``layer_outputs`` offers.

    Read from ``encoder.layer_names`` (set by :func:`load_encoder`), else found by running one
    zero image of ``encoder.input_spec`` through ``layer_outputs``.
    """
    names = getattr(encoder, "layer_names", None)
    if names:
        return tuple(names)
    layer_outputs = getattr(encoder, "layer_outputs", None)
    spec = getattr(encoder, "input_spec", None)
    if not callable(layer_outputs) or spec is None:
        return ("global",)
    param = next(iter(encoder.parameters()), None)
    x = torch.zeros(1, *spec.shape, device=param.device if param is not None else "cpu")
    was_training = encoder.training
    encoder.eval()
    try:
        return ("global", *[n for n in layer_outputs(x) if n != "global"])
    finally:
        encoder.train(was_training)


def embedding_function(encoder: nn.Module, layer: str | None = None) -> Callable[[Tensor], Tensor]:
    """``x [B, C, S, S]`` float in [0, 1] -> ``[B, D]``: the representation named ``layer``.

    layer: None -> the one the run's evaluation used (``encoder.embed_layer``, what
    ``objective.embed`` computed); ``"global"`` -> ``encoder(x).global_``; any name of
    ``encoder.layer_outputs(x)`` (e.g. DIM's ``conv``, ``fc``, ``code``) -> that output
    flattened to ``[B, D]``. An unknown name is a :class:`ConfigError` listing the layers.
    The function neither switches the encoder to eval mode nor turns gradients off.
    """
    chosen = layer if layer is not None else str(getattr(encoder, "embed_layer", "global"))
    if chosen == "global":
        return lambda x: encoder(x).global_
    available = available_layers(encoder)
    if chosen not in available:
        raise ConfigError(
            f"--layer {chosen!r}: not a representation of this {type(encoder).__name__} encoder. "
            f"Layers available: {', '.join(available)}."
        )

    def embed(x: Tensor) -> Tensor:
        return encoder.layer_outputs(x)[chosen].flatten(1)

    return embed
