"""Negative samplers: where the negatives of a contrastive objective come from.

Each sampler turns a critic plus aligned query/key pairs into :class:`Scores`; those that
keep state (queue, bank) hold it in buffers, so it is checkpointed with the model. Under
torch.distributed every sampler sees the global batch: in-batch negatives are gathered
from every process (gradients flow back to each process's own rows), and queue and bank
updates gather the keys of every process first, so all processes hold identical state.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup import distributed
from selfsup.interfaces import Critic, NegativeSampler, Scores


class InBatchNegatives(NegativeSampler):
    """The other samples of the (global) batch are the negatives.

    both_views: also use the other queries as negatives (SimCLR's 2N - 2 negatives);
        otherwise each query is scored against the N - 1 other keys.
    gather: under torch.distributed, N is the global batch: keys (and queries) of every
        process are gathered, and gradients flow back to each process's own rows.
    """

    def __init__(self, both_views: bool = False, gather: bool = True) -> None:
        super().__init__()
        self.both_views = both_views
        self.gather = gather

    def score(self, critic: Critic, query: Tensor, key: Tensor, index: Tensor | None = None) -> Scores:
        n = query.shape[0]
        gathered = self.gather and distributed.world_size() > 1
        keys = distributed.gather_with_grad(key) if gathered else key  # [M, D], M = W * N
        total = keys.shape[0]
        if total < 2:
            raise ValueError("in-batch negatives need a batch of at least 2 samples")
        offset = distributed.rank() * n if gathered else 0
        rows = torch.arange(n, device=query.device)
        positive = torch.zeros(n, total, dtype=torch.bool, device=query.device)
        positive[rows, rows + offset] = True  # query i's key sits at global row offset + i
        query_key = critic.similarity(query, keys)  # [N, M]
        if not self.both_views:
            return Scores.from_matrix(query_key, positive)
        queries = distributed.gather_with_grad(query) if gathered else query  # [M, D]
        query_query = critic.similarity(query, queries)  # [N, M]; self-similarity dropped
        matrix = torch.cat([query_key, query_query], dim=1)  # [N, 2M]
        return Scores.from_matrix(
            matrix, torch.cat([positive, torch.zeros_like(positive)], dim=1), torch.cat([~positive, ~positive], dim=1)
        )


def _scores_against(critic: Critic, query: Tensor, positive_key: Tensor, negatives: Tensor) -> Scores:
    """query ``[N, D]``, positive keys ``[N, D]``, shared negatives ``[K, D]`` -> Scores [N, 1] / [N, K]."""
    positive = critic.pair(query, positive_key).unsqueeze(1)  # [N, 1]
    negative = critic.forward(query, negatives.to(query.dtype))  # [N, K]
    if not critic.higher_is_similar:
        positive, negative = -positive, -negative
    return Scores(positive, negative)


class MomentumQueue(NegativeSampler):
    """MoCo's FIFO queue of keys from the momentum encoder.

    size: number of keys K kept; it need not divide the batch size (writes wrap around).
    The queue starts as random unit vectors, as in MoCo. ``setup(dim)`` allocates it.
    Under torch.distributed the keys of every process are gathered (in rank order) before
    they are enqueued, so every process holds the same queue.
    """

    def __init__(self, size: int = 4096) -> None:
        super().__init__()
        if size <= 0:
            raise ValueError(f"queue size must be positive, got {size}")
        self.size = int(size)
        self.register_buffer("keys", torch.empty(0))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self._pointer = 0  # host copy of ``pointer``: no device sync per step

    def setup(self, dim: int, num_samples: int | None = None) -> None:
        """Allocate the ``[K, dim]`` queue of random unit vectors."""
        self.keys = F.normalize(torch.randn(self.size, dim), dim=1)

    def score(self, critic: Critic, query: Tensor, key: Tensor, index: Tensor | None = None) -> Scores:
        if self.keys.numel() == 0:
            raise RuntimeError("MomentumQueue.setup(dim) was not called by the objective")
        return _scores_against(critic, query, key, self.keys)

    @torch.no_grad()
    def update(self, key: Tensor, index: Tensor | None = None) -> None:
        """Write the (gathered) ``key [N, D]`` over the oldest entries, in order, wrapping at the end."""
        key = distributed.gather(key.detach())
        key = key[-self.size :].to(self.keys.dtype)  # more keys than slots: keep the newest
        n = key.shape[0]
        slots = (self._pointer + torch.arange(n, device=self.keys.device)) % self.size
        self.keys.index_copy_(0, slots, key)
        self._pointer = (self._pointer + n) % self.size
        self.pointer.fill_(self._pointer)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        # Accept a queue of the checkpoint's shape even if setup() allocated another one.
        saved = state_dict.get(prefix + "keys")
        if saved is not None and saved.shape != self.keys.shape:
            self.keys = torch.empty_like(saved, device=self.keys.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._pointer = int(self.pointer)


class MemoryBank(NegativeSampler):
    """Memory bank of InstDisc / NPID (Wu et al. 2018): one slot per training sample.

    Slot i holds a running average of sample i's key, updated after each step as
    ``v_i <- normalize(momentum * v_i + (1 - momentum) * key_i)``; each step scores the
    queries against K slots drawn uniformly (with replacement), shared by the batch.

    num_negatives: K, the slots drawn per step.
    momentum: weight of the old slot value (NPID uses 0.5).
    positive: ``key`` scores each query against its own key (MoCo-style, two views);
        ``bank`` against the sample's own slot (NPID).
    normalize: re-normalise slots after each update (NPID does).

    ``setup(dim, num_samples)`` allocates the ``[num_samples, dim]`` bank once; it stays one
    tensor, updated in place with ``index_copy_`` (a 1M x 128 float32 bank is 512 MB and is
    never copied). The draws come from a generator re-seeded each step with (a seed fixed at
    setup, a draw counter); both are buffers, so a resumed run and every process draw the
    same negatives. Under torch.distributed, keys and indices of every process are gathered
    before the update, so every process holds the same bank.
    """

    def __init__(
        self,
        num_negatives: int = 4096,
        momentum: float = 0.5,
        positive: Literal["key", "bank"] = "key",
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if num_negatives <= 0:
            raise ValueError(f"num_negatives must be positive, got {num_negatives}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if positive not in ("key", "bank"):
            raise ValueError(f"positive must be 'key' or 'bank', got {positive!r}")
        self.num_negatives = int(num_negatives)
        self.momentum = float(momentum)
        self.positive = positive
        self.normalize = normalize
        self.register_buffer("bank", torch.empty(0))
        self.register_buffer("seed", torch.zeros((), dtype=torch.long))
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))
        self._seed = 0  # host copies of the buffers: no device sync per step
        self._draws = 0

    def setup(self, dim: int, num_samples: int | None = None) -> None:
        """Allocate the ``[num_samples, dim]`` bank of random unit vectors and fix the draw seed."""
        if not num_samples or num_samples <= 0:
            raise ValueError(
                "memory_bank needs the training-set size: the objective passes num_train (filled from the data)"
            )
        bank = torch.randn(num_samples, dim)
        bank.div_(bank.norm(dim=1, keepdim=True))  # in place: no second bank-sized tensor
        self.bank = bank
        self._seed = int(torch.randint(0, 2**62, ()).item())  # from the seeded global RNG
        self.seed.fill_(self._seed)
        self._draws = 0
        self.draws.zero_()

    @property
    def num_samples(self) -> int:
        return int(self.bank.shape[0])

    def draw_negatives(self, device: torch.device) -> Tensor:
        """The ``[K]`` slot indices of this step's negatives (advances the draw counter)."""
        generator = torch.Generator(device).manual_seed((self._seed + 1_000_003 * self._draws) % 2**63)
        self._draws += 1
        self.draws.fill_(self._draws)
        drawn = torch.randint(self.num_samples, (self.num_negatives,), generator=generator, device=device)
        return drawn.sort().values  # ascending: the gather from a large bank reads it in order

    def score(self, critic: Critic, query: Tensor, key: Tensor, index: Tensor | None = None) -> Scores:
        if self.bank.numel() == 0:
            raise RuntimeError("MemoryBank.setup(dim, num_samples) was not called by the objective")
        negatives = self.bank.index_select(0, self.draw_negatives(self.bank.device))  # [K, D]: K rows
        if self.positive == "bank":
            if index is None:
                raise ValueError("memory_bank with positive='bank' needs batch.index")
            key = self.bank.index_select(0, index)  # [N, D]
        return _scores_against(critic, query, key, negatives)

    @torch.no_grad()
    def update(self, key: Tensor, index: Tensor | None = None) -> None:
        """Momentum-update the slots ``index [N]`` with ``key [N, D]`` (gathered over processes)."""
        if index is None:
            raise ValueError("memory_bank needs batch.index (the samples' positions in the training set)")
        key = distributed.gather(key.detach()).to(self.bank.dtype)
        index = distributed.gather(index.to(self.bank.device))
        slots = self.bank.index_select(0, index)  # [N, D]
        slots.mul_(self.momentum).add_(key, alpha=1.0 - self.momentum)
        if self.normalize:
            slots.div_(slots.norm(dim=1, keepdim=True).clamp_min_(1e-12))
        self.bank.index_copy_(0, index, slots)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        saved = state_dict.get(prefix + "bank")
        if saved is not None and saved.shape != self.bank.shape:
            self.bank = torch.empty_like(saved, device=self.bank.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # copies in place
        self._seed, self._draws = int(self.seed), int(self.draws)
