"""Batched feature extraction from images (or multimodal token mappings) with any embedding function."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

__all__ = ["extract_features"]


def _to_unit_float(batch: Tensor) -> Tensor:
    """``[B, C, H, W]`` uint8 in 0..255 or float in [0, 1] -> float32 in [0, 1]."""
    if batch.dtype == torch.uint8:
        return batch.to(torch.float32).div_(255.0)
    return batch.to(torch.float32)


def _check_modalities(inputs: Mapping[str, Tensor]) -> int:
    """Validate a mapping modality -> ``[N, ...]`` floating tensor; return N."""
    if not inputs:
        raise ValueError("inputs is an empty mapping; give at least one modality")
    sizes = set()
    for name, x in inputs.items():
        if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"modality {name!r} must be a floating [N, ...] tensor, got {shape}")
        sizes.add(int(x.shape[0]))
    if len(sizes) != 1:
        raise ValueError(f"every modality must hold the same number of samples, got sizes {sorted(sizes)}")
    n = sizes.pop()
    if n == 0:
        raise ValueError("inputs are empty (0 samples); nothing to embed")
    return n


@torch.no_grad()
def extract_features(
    embed_fn: Callable[[Tensor], Tensor],
    images: Tensor | Mapping[str, Tensor],
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Embed ``images`` (or a mapping modality -> tokens) batch by batch.

    Each batch is moved to ``device``, converted there to float32 in [0, 1] (uint8 is divided
    by 255, float is cast), passed to ``embed_fn`` and the result brought back to the CPU.
    Gradients are off; put a module in ``eval()`` mode yourself before calling.

    Multimodal inputs (a mapping name -> floating ``[N, T_m, F_m]``) are batched the same
    way: ``embed_fn`` receives a mapping name -> float32 ``[B, T_m, F_m]``.

    Args:
        embed_fn: Maps ``[B, C, H, W]`` float32 in [0, 1] (or a mapping of modalities) to
            ``[B, D]`` features.
        images: ``[N, C, H, W]`` uint8 (0..255) or floating (0..1), N >= 1, on any device;
            or a mapping modality -> floating ``[N, T_m, F_m]``; or a streamed split (an
            object with ``batches(batch_size)`` yielding uint8 ``[B, C, H, W]``, e.g.
            :class:`selfsup.data.StreamedImages`), read batch by batch from its files.
        batch_size: Images per call of ``embed_fn``.
        device: Where ``embed_fn`` runs.

    Returns:
        ``[N, D]`` float32 features on the CPU.
    """
    if isinstance(images, Mapping):
        return _extract_multimodal(embed_fn, images, batch_size, device)
    if hasattr(images, "batches") and not isinstance(images, Tensor):  # a streamed split
        _check_batch_size(batch_size)
        if len(images) == 0:
            raise ValueError("images is empty (0 samples); nothing to embed")
        return _embed_batches(embed_fn, images.batches(batch_size), device)
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must have shape [N, C, H, W], got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"images must be uint8 (0..255) or float (0..1), got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images is empty (shape [0, C, H, W]); nothing to embed")
    _check_batch_size(batch_size)
    return _embed_batches(embed_fn, images.split(batch_size), device)


def _embed_batches(embed_fn: Callable[[Tensor], Tensor], batches, device: str | torch.device) -> Tensor:
    """``[N, D]`` features of image batches ``[B, C, H, W]`` (uint8 or float), each moved to
    ``device`` and made float in [0, 1] there."""
    outputs: list[Tensor] = []
    for batch in batches:
        x = _to_unit_float(batch.to(device, non_blocking=True))
        outputs.append(_checked_output(embed_fn(x), len(x), tuple(x.shape)))
    return torch.cat(outputs)


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def _checked_output(features: Tensor, n: int, input_shape: object) -> Tensor:
    """``embed_fn``'s output for a batch of ``n`` as float32 on the CPU, or a ValueError."""
    if not isinstance(features, Tensor) or features.dim() != 2 or features.shape[0] != n:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features)
        raise ValueError(
            f"embed_fn must return a [batch, dim] tensor; for a batch of shape "
            f"{input_shape} it returned {shape}"
        )
    return features.to(device="cpu", dtype=torch.float32)


def _extract_multimodal(
    embed_fn: Callable, inputs: Mapping[str, Tensor], batch_size: int, device: str | torch.device
) -> Tensor:
    n = _check_modalities(inputs)
    _check_batch_size(batch_size)
    outputs: list[Tensor] = []
    for start in range(0, n, batch_size):
        batch = {
            name: x[start : start + batch_size].to(device, non_blocking=True).to(torch.float32)
            for name, x in inputs.items()
        }
        b = min(batch_size, n - start)
        shapes = {name: tuple(x.shape) for name, x in batch.items()}
        outputs.append(_checked_output(embed_fn(batch), b, shapes))
    return torch.cat(outputs)
