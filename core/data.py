"""Data interfaces: what a dataset factory returns and what a view transform does.

A split is either :class:`ImageArrays` (images ``[N, C, H, W]``) or :class:`MultiModalArrays`
(a mapping modality name -> token tensor ``[N, T_m, F_m]``). Both offer the same small
interface the engine uses: ``len``, ``labels``, ``inputs``, ``select(index)``, ``to(device)``
and ``as_float()``.

Concrete datasets (digits, ``.npz`` arrays, torchvision, ImageFolder, multi-view data) and
augmentations live in plugins and are registered under the kinds ``dataset`` and ``transform``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


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

    @property
    def inputs(self) -> Tensor:
        """What an encoder reads: the images ``[N, C, H, W]`` in their stored dtype."""
        return self.images

    def select(self, index: Tensor) -> "ImageArrays":
        """The samples at ``index`` ``[B]`` (same device as the arrays), stored dtype kept."""
        return ImageArrays(self.images.index_select(0, index), self.labels.index_select(0, index))

    def to(self, device: torch.device | str) -> "ImageArrays":
        return ImageArrays(self.images.to(device), self.labels.to(device))

    def as_float(self, device: torch.device | str | None = None) -> Tensor:
        """Images as float32 in [0, 1], ``[N, C, H, W]``, on ``device``."""
        x = self.images.to(device) if device is not None else self.images
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


@dataclass
class MultiModalArrays:
    """A multimodal split held in memory: each sample is a mapping modality -> token sequence.

    modalities: name -> ``[N, T_m, F_m]`` floating tensor (T_m tokens of F_m features); at
        least one modality, all with the same N. Modalities may differ in T and F.
    labels: ``[N]`` int64 class indices (or -1 where unknown).
    """

    modalities: dict[str, Tensor]
    labels: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.modalities, dict) or not self.modalities:
            raise ValueError("modalities must be a non-empty mapping name -> [N, T, F] tensor")
        n = int(self.labels.shape[0]) if self.labels.dim() == 1 else -1
        for name, tokens in self.modalities.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"modality names must be non-empty strings, got {name!r}")
            if not isinstance(tokens, Tensor) or tokens.dim() != 3 or not tokens.is_floating_point():
                shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
                raise ValueError(f"modality {name!r} must be a floating [N, T, F] tensor, got {shape}")
            if tokens.shape[0] != n:
                raise ValueError(
                    f"modality {name!r} has {tokens.shape[0]} samples but labels are shaped "
                    f"{tuple(self.labels.shape)}; expected labels [N] with the same N"
                )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def inputs(self) -> dict[str, Tensor]:
        """What an encoder reads: modality name -> ``[N, T_m, F_m]``."""
        return self.modalities

    @property
    def shapes(self) -> dict[str, tuple[int, int]]:
        """Modality name -> (tokens T_m, features F_m)."""
        return {name: (int(x.shape[1]), int(x.shape[2])) for name, x in self.modalities.items()}

    def select(self, index: Tensor) -> "MultiModalArrays":
        """The samples at ``index`` ``[B]`` (same device as the arrays)."""
        return MultiModalArrays(
            {name: x.index_select(0, index) for name, x in self.modalities.items()}, self.labels.index_select(0, index)
        )

    def to(self, device: torch.device | str) -> "MultiModalArrays":
        return MultiModalArrays({name: x.to(device) for name, x in self.modalities.items()}, self.labels.to(device))

    def as_float(self, device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Modality name -> float32 ``[N, T_m, F_m]`` on ``device``."""
        return {name: x.to(device=device, dtype=torch.float32) for name, x in self.modalities.items()}


#: What a split holds: images or a mapping of modalities.
Split = ImageArrays | MultiModalArrays


@dataclass
class DataSplits:
    """What a ``dataset`` factory returns: a training split and a held-out test split."""

    train: ImageArrays | MultiModalArrays
    test: ImageArrays | MultiModalArrays
    class_names: list[str] = field(default_factory=list)
    #: Where the data came from, for logs and error messages.
    source: str = ""

    def __post_init__(self) -> None:
        if type(self.train) is not type(self.test):
            raise ValueError(
                f"train and test splits must be of the same type, got {type(self.train).__name__} "
                f"and {type(self.test).__name__}"
            )
        if isinstance(self.train, MultiModalArrays) and self.train.shapes != self.test.shapes:
            raise ValueError(
                f"train and test splits must have the same modalities and shapes, got "
                f"{self.train.shapes} and {self.test.shapes}"
            )

    @property
    def is_multimodal(self) -> bool:
        return isinstance(self.train, MultiModalArrays)

    @property
    def in_channels(self) -> int:
        if self.is_multimodal:
            raise ValueError("multimodal data has no image channels; see modality_shapes")
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        if self.is_multimodal:
            raise ValueError("multimodal data has no image size; see modality_shapes")
        return int(self.train.images.shape[-1])

    @property
    def modality_shapes(self) -> dict[str, tuple[int, int]]:
        """Modality name -> (tokens, features); empty for image data."""
        return self.train.shapes if isinstance(self.train, MultiModalArrays) else {}

    @property
    def num_classes(self) -> int:
        if self.class_names:
            return len(self.class_names)
        return int(max(self.train.labels.max(), self.test.labels.max()).item()) + 1

    def context(self) -> dict[str, Any]:
        """Values that fill data-dependent component parameters (see selfsup.config).

        Image data gives ``in_channels`` and ``image_size``; multimodal data gives
        ``modality_shapes`` (name -> (tokens, features)) instead.
        """
        shape: dict[str, Any] = (
            {"modality_shapes": self.modality_shapes}
            if self.is_multimodal
            else {"in_channels": self.in_channels, "image_size": self.image_size}
        )
        return {**shape, "num_classes": self.num_classes, "num_train": len(self.train)}
