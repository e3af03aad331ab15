"""Data interfaces: what a dataset factory returns and what a view transform does.

Concrete datasets (digits, ``.npz`` arrays, torchvision, ImageFolder) and augmentations live
in plugins and are registered under the kinds ``dataset`` and ``transform``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class ImageArrays:
    """A split held in memory.

    images: ``[N, C, H, W]`` uint8 (0..255) or float32 in [0, 1].
    labels: ``[N]`` int64 class indices (or -1 where unknown).
    """

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be [N] with N={self.images.shape[0]}, got shape {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def as_float(self, device: torch.device | str | None = None) -> Tensor:
        """Images as float32 in [0, 1], ``[N, C, H, W]``, on ``device``."""
        x = self.images.to(device) if device is not None else self.images
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


@dataclass
class DataSplits:
    """What a ``dataset`` factory returns: a training split and a held-out test split."""

    train: ImageArrays
    test: ImageArrays
    class_names: list[str] = field(default_factory=list)
    #: Where the data came from, for logs and error messages.
    source: str = ""

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    @property
    def num_classes(self) -> int:
        if self.class_names:
            return len(self.class_names)
        return int(max(self.train.labels.max(), self.test.labels.max()).item()) + 1

    def context(self) -> dict[str, int]:
        """Values that fill data-dependent component parameters (see selfsup.config)."""
        return {
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "num_train": len(self.train),
        }


class ViewTransform(nn.Module, abc.ABC):
    """Batch-wise augmentation on the training device: one batch -> several views.

    Randomness comes only from the ``generator`` argument, so a run is reproducible and a
    resumed run draws the same augmentations.
    """

    @abc.abstractmethod
    def forward(self, images: Tensor, num_views: int, generator: torch.Generator | None = None) -> list[Tensor]:
        """images ``[N, C, H, W]`` float in [0, 1] -> ``num_views`` tensors ``[N, C, H, W]``."""
