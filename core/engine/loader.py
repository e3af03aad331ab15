"""Batches from an in-memory split, on the training device, with a resumable order."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..data import ImageArrays, MultiModalArrays
from ..errors import ConfigError


class InMemoryBatches:
    """Shuffled batches of an :class:`ImageArrays` or :class:`MultiModalArrays` kept on ``device``.

    The order of epoch e is a permutation drawn from ``seed`` and e alone, so a run resumed
    mid-epoch sees exactly the batches it would have seen. Yields
    ``(inputs, labels [B], index [B])`` where inputs are images ``[B, C, H, W]`` float in
    [0, 1] or, for multimodal data, a mapping modality -> float ``[B, T_m, F_m]``. No
    per-sample Python work: one gather per batch (and modality).

    Distributed (``world_size`` W > 1): ``batch_size`` is the global batch. Every rank draws
    the same order; rank r yields shard r, the rows ``[r*B/W, (r+1)*B/W)`` of each global
    batch, so the shards of a step concatenated in rank order are the batch one process
    would see. A last partial batch (``drop_last=false``) is cut to a multiple of W.
    """

    def __init__(
        self, split: ImageArrays | MultiModalArrays, batch_size: int, device: torch.device, seed: int,
        drop_last: bool = True, rank: int = 0, world_size: int = 1,
    ):
        if batch_size <= 0:
            raise ConfigError(f"data.batch_size: must be positive, got {batch_size}.")
        if batch_size % world_size:
            raise ConfigError(
                f"data.batch_size: the global batch of {batch_size} does not split evenly over "
                f"{world_size} processes; use a multiple of {world_size}."
            )
        n = len(split)
        if drop_last and n < batch_size:
            raise ConfigError(
                f"data.batch_size: {batch_size} is more than the {n} training samples; "
                "lower the batch size or set data.drop_last=false."
            )
        self.split = split.to(device)  # kept in its stored dtype (uint8 stays small)
        self.num_samples = n
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.device = device
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        n = self.num_samples
        if self.drop_last or n % self.batch_size < self.world_size:  # no remainder, or too small to shard
            return n // self.batch_size
        return n // self.batch_size + 1

    def order(self, epoch: int) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=g).to(self.device)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        order = self.order(epoch)
        for b in range(start_batch, len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            if self.world_size > 1:
                shard = len(index) // self.world_size
                index = index[self.rank * shard : (self.rank + 1) * shard]
            batch = self.split.select(index)
            yield batch.as_float(), batch.labels, index
