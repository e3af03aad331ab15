"""Batches of the training split with a resumable order: from memory, or streamed from files.

Both loaders yield ``(inputs, labels [B], index [B])`` with inputs images ``[B, C, H, W]``
float in [0, 1] on the training device (or, in memory, a mapping modality -> float
``[B, T_m, F_m]``), and draw the same order: the permutation of epoch e comes from ``seed``
and e alone, so a run resumed mid-epoch sees exactly the batches it would have seen, and
either loader gives the same batches for the same data.

Distributed (``world_size`` W > 1): ``batch_size`` is the global batch. Every rank draws the
same order; rank r yields shard r, the rows ``[r*B/W, (r+1)*B/W)`` of each global batch, so
the shards of a step concatenated in rank order are the batch one process would see. A last
partial batch (``drop_last=false``) is cut to a multiple of W.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from ..data import ImageArrays, MultiModalArrays, StreamedImages
from ..errors import ConfigError
from ..streaming import DecodedBatch, SampleReader, collate_samples


class ShuffledOrder:
    """The per-epoch order of a split's samples and this rank's share of every global batch."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, drop_last: bool = True, rank: int = 0,
                 world_size: int = 1):
        if batch_size <= 0:
            raise ConfigError(f"data.batch_size: must be positive, got {batch_size}.")
        if batch_size % world_size:
            raise ConfigError(
                f"data.batch_size: the global batch of {batch_size} does not split evenly over "
                f"{world_size} processes; use a multiple of {world_size}."
            )
        if drop_last and num_samples < batch_size:
            raise ConfigError(
                f"data.batch_size: {batch_size} is more than the {num_samples} training samples; "
                "lower the batch size or set data.drop_last=false."
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        n = self.num_samples
        if self.drop_last or n % self.batch_size < self.world_size:  # no remainder, or too small to shard
            return n // self.batch_size
        return n // self.batch_size + 1

    def order(self, epoch: int) -> Tensor:
        """The permutation ``[N]`` of epoch ``epoch`` (CPU, int64)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=g)

    def shards(self, epoch: int, start_batch: int = 0) -> Iterator[Tensor]:
        """This rank's sample positions ``[B / W]`` of every batch of ``epoch`` from ``start_batch``."""
        order = self.order(epoch)
        for b in range(start_batch, len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            if self.world_size > 1:
                shard = len(index) // self.world_size
                index = index[self.rank * shard : (self.rank + 1) * shard]
            yield index


class InMemoryBatches(ShuffledOrder):
    """Shuffled batches of an :class:`ImageArrays` or :class:`MultiModalArrays` kept on ``device``.

    No per-sample Python work: one gather per batch (and modality). See the module's
    docstring for the order and the distributed shards.
    """

    def __init__(
        self, split: ImageArrays | MultiModalArrays, batch_size: int, device: torch.device, seed: int,
        drop_last: bool = True, rank: int = 0, world_size: int = 1,
    ):
        super().__init__(len(split), batch_size, seed, drop_last, rank, world_size)
        self.split = split.to(device)  # kept in its stored dtype (uint8 stays small)
        self.device = device

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for index in self.shards(epoch, start_batch):
            index = index.to(self.device)
            batch = self.split.select(index)
            yield batch.as_float(), batch.labels, index


class _EpochShards:
    """The batch sampler of a persistent DataLoader: the shards of the epoch set last."""

    def __init__(self, order: ShuffledOrder):
        self.order = order
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return len(self.order) - self.start

    def __iter__(self) -> Iterator[list[int]]:
        for index in self.order.shards(self.epoch, self.start):
            yield index.tolist()


class StreamingBatches(ShuffledOrder):
    """Shuffled batches of a :class:`StreamedImages` read and decoded by DataLoader workers.

    ``workers`` processes read and decode the samples of each batch (``0``: in this process)
    and hand over uint8 ``[B, C, S, S]`` (pinned when the device is a GPU, ``prefetch`` batches
    ahead per worker); the batch is copied without blocking and made float on the device,
    where the batch-wise augmentation runs as for the in-memory loader. A sample that cannot
    be read stops the run with its path (``on_bad_image: fail``) or is replaced by the next
    readable sample of the split (``skip``: the same replacement on every run, so resume and
    the distributed shards stay exact); ``on_skipped(text)`` hears about the first few.
    """

    def __init__(
        self, split: StreamedImages, batch_size: int, device: torch.device, seed: int, drop_last: bool = True,
        rank: int = 0, world_size: int = 1, workers: int = 0, prefetch: int = 2,
        on_skipped: Callable[[str], None] | None = None,
    ):
        super().__init__(len(split), batch_size, seed, drop_last, rank, world_size)
        self.split = split
        self.device = device
        self.labels = split.labels.to(device)
        self.on_skipped = on_skipped
        self.skipped = 0  # distinct unreadable samples met so far
        self.seen_skipped: set[str] = set()
        self.sampler = _EpochShards(self)
        reader = SampleReader(split.source, split.rows, split.on_bad_image)
        self.dataloader = torch.utils.data.DataLoader(
            reader, batch_sampler=self.sampler, num_workers=workers,
            collate_fn=functools.partial(collate_samples, shape=split.image_shape),
            pin_memory=device.type == "cuda", persistent_workers=workers > 0,
            prefetch_factor=prefetch if workers > 0 else None,
        )

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        self.sampler.epoch, self.sampler.start = epoch, start_batch
        for batch in self.dataloader:
            self._report(batch)
            index = batch.index.to(self.device, non_blocking=True)
            images = batch.images.to(self.device, non_blocking=True)
            yield images.float().div_(255.0), self.labels.index_select(0, index), index

    def _report(self, batch: DecodedBatch) -> None:
        batch.raise_failure()
        for described in batch.skipped:
            if described in self.seen_skipped:  # the same file again, in a later epoch
                continue
            self.seen_skipped.add(described)
            self.skipped += 1
            if self.on_skipped is not None and self.skipped <= 5:
                more = " (further ones are counted, not listed)" if self.skipped == 5 else ""
                self.on_skipped(f"skipped an unreadable image (data.on_bad_image: skip): {described}{more}")
