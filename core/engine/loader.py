"""Batches from an in-memory split, on the training device, with a resumable order."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..data import ImageArrays
from ..errors import ConfigError


class InMemoryBatches:
    """Shuffled batches of an :class:`ImageArrays` kept on ``device``.

    The order of epoch e is a permutation drawn from ``seed`` and e alone, so a run resumed
    mid-epoch sees exactly the batches it would have seen. Yields
    ``(images [B, C, H, W] float in [0, 1], labels [B], index [B])``. No per-sample Python
    work: one gather per batch.
    """

    def __init__(self, split: ImageArrays, batch_size: int, device: torch.device, seed: int, drop_last: bool = True):
        if batch_size <= 0:
            raise ConfigError(f"data.batch_size: must be positive, got {batch_size}.")
        n = len(split)
        if drop_last and n < batch_size:
            raise ConfigError(
                f"data.batch_size: {batch_size} is more than the {n} training samples; "
                "lower the batch size or set data.drop_last=false."
            )
        self.images = split.images.to(device)  # kept in its stored dtype (uint8 stays small)
        self.labels = split.labels.to(device)
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.device = device

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.images.shape[0], generator=g).to(self.device)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        order = self.order(epoch)
        for b in range(start_batch, len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            images = self.images.index_select(0, index)
            images = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
            yield images, self.labels.index_select(0, index), index
