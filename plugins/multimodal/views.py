"""Views of an image as token sequences, in the spirit of UCI "Multiple Features".

Each function maps float images ``[N, C, H, W]`` to one modality ``[N, T, F]`` (T tokens of
F features); several such descriptions of the same digit make a multi-view dataset:

=============  ==========================  =====================================
modality       tokens                      features per token
=============  ==========================  =====================================
``patches``    (H/p)·(W/p) p×p patches     C·p² pixel values
``rows``       H rows (top to bottom)      C·W pixel values of the row
``columns``    W columns (left to right)   C·H pixel values of the column
``spectrum``   H vertical frequencies      C·(W/2+1) values log(1 + |FFT2|)
=============  ==========================  =====================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["IMAGE_VIEWS", "column_profiles", "image_views", "patch_tokens", "row_profiles", "spectrum_tokens",
           "standardize"]


def _check_images(images: Tensor) -> None:
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images must be floating [N, C, H, W], got {images.dtype} {tuple(images.shape)}")


def patch_tokens(images: Tensor, patch_size: int) -> Tensor:
    """Non-overlapping ``p×p`` patches: ``[N, C, H, W]`` -> ``[N, ceil(H/p)·ceil(W/p), C·p²]``.

    Images whose sides are not multiples of p are zero-padded on the bottom and right.
    Tokens run row-major over the patch grid; features are channel-major within a patch.
    """
    _check_images(images)
    if patch_size < 1:
        raise ValueError(f"patch_size must be positive, got {patch_size}")
    h, w = images.shape[-2:]
    padded = F.pad(images, (0, -w % patch_size, 0, -h % patch_size))
    return F.unfold(padded, patch_size, stride=patch_size).transpose(1, 2).contiguous()  # [N, L, C·p²]


def row_profiles(images: Tensor) -> Tensor:
    """Rows as a sequence: ``[N, C, H, W]`` -> ``[N, H, C·W]``."""
    _check_images(images)
    n, c, h, w = images.shape
    return images.permute(0, 2, 1, 3).reshape(n, h, c * w)


def column_profiles(images: Tensor) -> Tensor:
    """Columns as a sequence: ``[N, C, H, W]`` -> ``[N, W, C·H]``."""
    _check_images(images)
    n, c, h, w = images.shape
    return images.permute(0, 3, 1, 2).reshape(n, w, c * h)


def spectrum_tokens(images: Tensor) -> Tensor:
    """2-D spectrum magnitudes ``log(1 + |rfft2(x)|)``: ``[N, C, H, W]`` -> ``[N, H, C·(W//2+1)]``.

    One token per vertical frequency, ordered from -H/2 to H/2 (zero frequency centred);
    features are the non-negative horizontal frequencies of each channel.
    """
    _check_images(images)
    magnitude = torch.log1p(torch.fft.rfft2(images.float(), norm="ortho").abs())  # [N, C, H, W//2+1]
    magnitude = torch.fft.fftshift(magnitude, dim=-2)
    n, c, h, f = magnitude.shape
    return magnitude.permute(0, 2, 1, 3).reshape(n, h, c * f)


#: Name -> builder of each image view (``patches`` takes the patch size).
IMAGE_VIEWS: dict[str, Callable[..., Tensor]] = {
    "patches": patch_tokens,
    "rows": row_profiles,
    "columns": column_profiles,
    "spectrum": spectrum_tokens,
}


def image_views(images: Tensor, modalities: Sequence[str], patch_size: int) -> dict[str, Tensor]:
    """The requested views of images ``[N, C, H, W]`` (uint8 or float in [0, 1]): name -> ``[N, T, F]``."""
    x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
    unknown = [m for m in modalities if m not in IMAGE_VIEWS]
    if unknown or not modalities:
        raise ValueError(f"modalities must be a non-empty subset of {', '.join(IMAGE_VIEWS)}, got {list(modalities)}")
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities must not repeat, got {list(modalities)}")
    return {m: patch_tokens(x, patch_size) if m == "patches" else IMAGE_VIEWS[m](x) for m in modalities}


def standardize(train: dict[str, Tensor], test: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Z-score every feature of every modality with the training split's mean and std.

    Statistics are taken over samples and tokens (``[N, T, F]`` -> ``[F]``) of ``train``
    only. A feature constant in training is only centred (divided by 1, not by ~0), so a
    test value off that constant stays finite and proportionate.
    """
    out_train, out_test = {}, {}
    for name, x in train.items():
        mean = x.mean(dim=(0, 1), keepdim=True)
        std = x.std(dim=(0, 1), keepdim=True)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        out_train[name] = ((x - mean) / std).float().contiguous()
        out_test[name] = ((test[name] - mean) / std).float().contiguous()
    return out_train, out_test
