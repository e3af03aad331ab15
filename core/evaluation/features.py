"""Batched feature extraction from an image tensor with any embedding function."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["extract_features"]


def _to_unit_float(batch: Tensor) -> Tensor:
    """``[B, C, H, W]`` uint8 in 0..255 or float in [0, 1] -> float32 in [0, 1]."""
    if batch.dtype == torch.uint8:
        return batch.to(torch.float32).div_(255.0)
    return batch.to(torch.float32)


@torch.no_grad()
def extract_features(
    embed_fn: Callable[[Tensor], Tensor],
    images: Tensor,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Embed ``images`` batch by batch.

    Each batch is moved to ``device``, converted there to float32 in [0, 1] (uint8 is divided
    by 255, float is cast), passed to ``embed_fn`` and the result brought back to the CPU.
    Gradients are off; put a module in ``eval()`` mode yourself before calling.

    Args:
        embed_fn: Maps ``[B, C, H, W]`` float32 in [0, 1] to ``[B, D]`` features.
        images: ``[N, C, H, W]`` uint8 (0..255) or floating (0..1), N >= 1, on any device.
        batch_size: Images per call of ``embed_fn``.
        device: Where ``embed_fn`` runs.

    Returns:
        ``[N, D]`` float32 features on the CPU.
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must have shape [N, C, H, W], got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"images must be uint8 (0..255) or float (0..1), got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images is empty (shape [0, C, H, W]); nothing to embed")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

    outputs: list[Tensor] = []
    for batch in images.split(batch_size):
        x = _to_unit_float(batch.to(device, non_blocking=True))
        features = embed_fn(x)
        if not isinstance(features, Tensor) or features.dim() != 2 or features.shape[0] != len(x):
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features)
            raise ValueError(
                f"embed_fn must return a [batch, dim] tensor; for a batch of shape "
                f"{tuple(x.shape)} it returned {shape}"
            )
        outputs.append(features.to(device="cpu", dtype=torch.float32))
    return torch.cat(outputs)
