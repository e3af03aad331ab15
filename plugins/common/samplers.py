"""Negative samplers: where the negatives of a contrastive objective come from.

Each sampler turns a critic plus aligned query/key pairs into :class:`Scores`; those that
keep state (queue, bank) hold it in buffers, so it is checkpointed with the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.interfaces import Critic, NegativeSampler, Scores
from selfsup.registry import Registry


class InBatchNegatives(NegativeSampler):
    """The other samples of the batch are the negatives.

    both_views: also use the other queries as negatives (SimCLR's 2N - 2 negatives);
    otherwise each query is scored against the N - 1 other keys.
    """

    def __init__(self, both_views: bool = False) -> None:
        super().__init__()
        self.both_views = both_views

    def score(self, critic: Critic, query: Tensor, key: Tensor, index: Tensor | None = None) -> Scores:
        n = query.shape[0]
        if n < 2:
            raise ValueError("in-batch negatives need a batch of at least 2 samples")
        eye = torch.eye(n, dtype=torch.bool, device=query.device)
        query_key = critic.similarity(query, key)  # [N, N]; diagonal = positives
        if not self.both_views:
            return Scores.from_matrix(query_key, eye)
        query_query = critic.similarity(query, query)  # [N, N]; diagonal = self, dropped
        matrix = torch.cat([query_key, query_query], dim=1)  # [N, 2N]
        positive = torch.cat([eye, torch.zeros_like(eye)], dim=1)
        negative = torch.cat([~eye, ~eye], dim=1)
        return Scores.from_matrix(matrix, positive, negative)


class MomentumQueue(NegativeSampler):
    """MoCo's FIFO queue of keys from the momentum encoder.

    size: number of keys K kept; it need not divide the batch size (writes wrap around).
    The queue starts as random unit vectors, as in MoCo. ``setup(dim)`` allocates it.
    """

    def __init__(self, size: int = 4096) -> None:
        super().__init__()
        if size <= 0:
            raise ValueError(f"queue size must be positive, got {size}")
        self.size = int(size)
        self.register_buffer("keys", torch.empty(0))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def setup(self, dim: int, num_samples: int | None = None) -> None:
        """Allocate the ``[K, dim]`` queue of random unit vectors."""
        self.keys = F.normalize(torch.randn(self.size, dim), dim=1)

    def score(self, critic: Critic, query: Tensor, key: Tensor, index: Tensor | None = None) -> Scores:
        if self.keys.numel() == 0:
            raise RuntimeError("MomentumQueue.setup(dim) was not called by the objective")
        positive = critic.pair(query, key).unsqueeze(1)  # [N, 1]
        negative = critic.forward(query, self.keys.to(query.dtype))  # [N, K]
        if not critic.higher_is_similar:
            positive, negative = -positive, -negative
        return Scores(positive, negative)

    @torch.no_grad()
    def update(self, key: Tensor, index: Tensor | None = None) -> None:
        """Write ``key [N, D]`` over the oldest entries, in order, wrapping at the end."""
        key = key.detach()[-self.size :].to(self.keys.dtype)  # more keys than slots: keep newest
        n = key.shape[0]
        slots = (self.pointer + torch.arange(n, device=self.keys.device)) % self.size
        self.keys.index_copy_(0, slots, key)
        self.pointer.fill_((int(self.pointer) + n) % self.size)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        # Accept a queue of the checkpoint's shape even if setup() allocated another one.
        saved = state_dict.get(prefix + "keys")
        if saved is not None and saved.shape != self.keys.shape:
            self.keys = torch.empty_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def register(registry: Registry) -> None:
    registry.register("sampler", "in_batch", InBatchNegatives)
    registry.register("sampler", "momentum_queue", MomentumQueue)
