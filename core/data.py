"""Data interfaces: what a dataset factory returns and what a view transform does.

A split is either :class:`ImageArrays` (images ``[N, C, H, W]``) or :class:`MultiModalArrays`
(a mapping modality name -> token tensor ``[N, T_m, F_m]``). Both offer the same small
interface the engine uses: ``len``, ``labels``, ``inputs``, ``select(index)``, ``to(device)``
and ``as_float()``.

A split too large to decode into memory is a :class:`StreamedImages`: an
:class:`ImageSource` (files, tar shards, a memory-mapped array) read sample by sample by
DataLoader workers; the engine streams it or decodes it into :class:`ImageArrays` once
(``data.loader``). Its ``select`` decodes the rows asked for, so code that probes a few
samples works on either kind.

Concrete datasets (digits, ``.npz`` arrays, torchvision, image folders, shards, multi-view
data) and augmentations live in plugins and are registered under the kinds ``dataset`` and
``transform``.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
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
    #: Where each sample came from (file paths relative to the data root), when known.
    names: list[str] | None = None

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

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(int(d) for d in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        """Bytes the images take in memory."""
        return self.images.numel() * self.images.element_size()

    def select(self, index: Tensor) -> "ImageArrays":
        """The samples at ``index`` ``[B]`` (same device as the arrays), stored dtype kept."""
        names = [self.names[i] for i in index.tolist()] if self.names is not None else None
        return ImageArrays(self.images.index_select(0, index), self.labels.index_select(0, index), names)

    def to(self, device: torch.device | str) -> "ImageArrays":
        return ImageArrays(self.images.to(device), self.labels.to(device), self.names)

    def as_float(self, device: torch.device | str | None = None) -> Tensor:
        """Images as float32 in [0, 1], ``[N, C, H, W]``, on ``device``."""
        x = self.images.to(device) if device is not None else self.images
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


class ImageSource(abc.ABC):
    """Samples read one at a time (files, tar members, rows of a memory-mapped array).

    ``read(i)`` returns image i as uint8 ``[C, S, S]`` (numpy) at the source's fixed
    ``image_shape``, or raises (any exception) for an unreadable sample; ``describe(i)`` names
    sample i in messages (its path). A source is handed to DataLoader worker processes, so it
    holds plain data and opens its files lazily, in the process that reads them.
    """

    @property
    @abc.abstractmethod
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, S, S)`` of every image ``read`` returns."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def read(self, i: int) -> np.ndarray:
        """Sample i as uint8 ``[C, S, S]``."""

    def describe(self, i: int) -> str:
        return f"sample {i}"

    def fingerprint(self) -> str | None:
        """A string that changes when the decoded images would (names, sizes, mtimes and the
        decode settings), or None when decoding is not worth caching."""
        return None


@dataclass
class StreamedImages:
    """An image split read from an :class:`ImageSource`, never held in memory as a whole.

    source: where the images come from; rows ``rows`` of it form this split.
    labels: ``[N]`` int64 class indices (-1 where unknown).
    rows: ``[N]`` int64 positions in ``source`` (a split of a source keeps its own rows).
    names: one name per sample (e.g. file path relative to the data root), or None.
    on_bad_image: ``"skip"`` or ``"fail"`` (see :mod:`selfsup.streaming`).
    workers: DataLoader worker processes that read it (0: the reading process).
    """

    source: ImageSource
    labels: Tensor
    rows: Tensor
    names: list[str] | None = None
    on_bad_image: str = "fail"
    workers: int = 0

    def __post_init__(self) -> None:
        if self.labels.shape != self.rows.shape or self.labels.dim() != 1:
            raise ValueError(f"labels {tuple(self.labels.shape)} and rows {tuple(self.rows.shape)} must be [N] alike")
        if self.names is not None and len(self.names) != len(self.rows):
            raise ValueError(f"names must be one per sample: {len(self.names)} for {len(self.rows)}")

    @classmethod
    def of(cls, source: ImageSource, labels: Tensor | None = None, names: list[str] | None = None) -> "StreamedImages":
        """Every sample of ``source``; labels default to -1 (unknown)."""
        n = len(source)
        labels = torch.full((n,), -1, dtype=torch.int64) if labels is None else labels.to(torch.int64)
        return cls(source, labels, torch.arange(n), names)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def inputs(self) -> "StreamedImages":
        """What feature extraction reads: the split itself (it streams)."""
        return self

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.source.image_shape

    @property
    def nbytes(self) -> int:
        """Bytes the decoded images would take: N x C x S x S (uint8)."""
        c, h, w = self.image_shape
        return len(self) * c * h * w

    def subset(self, index: Tensor | np.ndarray) -> "StreamedImages":
        """The samples at positions ``index`` of this split (a new split over the same source)."""
        index = torch.as_tensor(index, dtype=torch.int64)
        names = [self.names[i] for i in index.tolist()] if self.names is not None else None
        return StreamedImages(self.source, self.labels[index], self.rows[index], names, self.on_bad_image,
                              self.workers)

    def select(self, index: Tensor) -> ImageArrays:
        """Decode the samples at ``index`` ``[B]`` now, in this process: uint8 ``[B, C, S, S]``
        (an unreadable one is replaced as streaming replaces it, or named in a DataError)."""
        from .streaming import SampleReader, collate_samples

        reader = SampleReader(self.source, self.rows, self.on_bad_image)
        batch = collate_samples([reader[i] for i in index.cpu().tolist()], self.image_shape)
        batch.raise_failure()
        names = [self.names[i] for i in batch.index.tolist()] if self.names is not None else None
        return ImageArrays(batch.images, self.labels[batch.index], names)

    def batches(self, batch_size: int) -> Iterator[Tensor]:
        """The images in order, uint8 ``[B, C, S, S]`` per batch, read by ``workers`` processes."""
        from .streaming import iter_batches

        return iter_batches(self, batch_size, self.workers)

    def to(self, device: torch.device | str) -> "StreamedImages":
        raise TypeError("a streamed split stays on the host; move its batches (selfsup.engine.loader) instead")


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


#: What a split holds: images (in memory or streamed) or a mapping of modalities.
Split = ImageArrays | StreamedImages | MultiModalArrays


@dataclass
class DataSplits:
    """What a ``dataset`` factory returns: a training split and a held-out test split.

    ``test`` is None for data with no held-out split (an unlabelled folder): evaluation then
    reads ``eval.data``, or is skipped. ``notes`` are lines for the run's log (e.g. images
    skipped as unreadable).
    """

    train: Split
    test: Split | None
    class_names: list[str] = field(default_factory=list)
    #: Where the data came from, for logs and error messages.
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        multimodal = [isinstance(s, MultiModalArrays) for s in (self.train, self.test) if s is not None]
        if len(set(multimodal)) > 1:
            raise ValueError(
                f"train and test splits must be of the same type, got {type(self.train).__name__} "
                f"and {type(self.test).__name__}"
            )
        if self.test is None:
            return
        if not multimodal[0] and self.test.image_shape != self.train.image_shape:
            raise ValueError(f"train and test images must have the same shape, got {self.train.image_shape} "
                             f"and {self.test.image_shape}")
        if isinstance(self.train, MultiModalArrays) and self.train.shapes != self.test.shapes:
            raise ValueError(
                f"train and test splits must have the same modalities and shapes, got "
                f"{self.train.shapes} and {self.test.shapes}"
            )

    @property
    def is_multimodal(self) -> bool:
        return isinstance(self.train, MultiModalArrays)

    @property
    def is_streamed(self) -> bool:
        return isinstance(self.train, StreamedImages)

    @property
    def has_labels(self) -> bool:
        """Whether a labelled held-out split exists (what kNN evaluation needs)."""
        return self.test is not None and len(self.test) > 0 and bool((self.test.labels >= 0).any())

    @property
    def in_channels(self) -> int:
        if self.is_multimodal:
            raise ValueError("multimodal data has no image channels; see modality_shapes")
        return int(self.train.image_shape[0])

    @property
    def image_size(self) -> int:
        if self.is_multimodal:
            raise ValueError("multimodal data has no image size; see modality_shapes")
        return int(self.train.image_shape[-1])

    @property
    def modality_shapes(self) -> dict[str, tuple[int, int]]:
        """Modality name -> (tokens, features); empty for image data."""
        return self.train.shapes if isinstance(self.train, MultiModalArrays) else {}

    @property
    def num_classes(self) -> int:
        if self.class_names:
            return len(self.class_names)
        tops = [int(s.labels.max()) for s in (self.train, self.test) if s is not None and len(s)]
        return max(tops, default=-1) + 1

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
