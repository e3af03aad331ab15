"""NNCLR's positives (Dwibedi et al. 2021): each key replaced by its nearest neighbour in a
support queue of past keys.

The paper's loss for query view embeddings z⁺ and key view embeddings z, with NN(z, Q) the
cosine nearest neighbour of z in the support set Q:

    L_i = -log( exp(NN(z_i, Q) · z⁺_i / τ) / Σ_k exp(NN(z_i, Q) · z⁺_k / τ) )

Each row is anchored at a *stored* vector, NN(z_i, Q), which carries no gradient; its
candidates are the query-view embeddings of the whole batch, its own (the positive) and the
N - 1 others (the negatives). The bundle symmetrises it by contrasting each view as the query
once (SimCLR does; MoCo with ``symmetric: true``). The support queue is a FIFO of the keys,
written after the optimiser step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup import distributed
from selfsup.interfaces import Critic, NegativeSampler, Scores


class NearestNeighbourPositives(NegativeSampler):
    """NNCLR: row i anchored at the nearest neighbour of key i in a support queue, against every query.

    ``score`` builds the ``[N, M]`` matrix ``S_ik = critic(query_k, NN(key_i))`` over the M
    queries of the (global) batch: the positive of row i is its own query k = i, the negatives
    the other M - 1 queries. NN(key_i) is the support entry of highest cosine similarity to
    key_i, found without gradient; the stored vector itself (not normalised) is what the
    critic scores. Until the queue has been filled once, only its written part is searched;
    while it is empty, a row's anchor is its own key (detached), which makes the step the
    in-batch contrast of keys against queries.

    size: K, the support queue's length (the paper: 98,304 on ImageNet; on a small data set a
        few batches' worth, e.g. 1,024 on digits with batches of 128, since older keys come
        from a network that has since changed).
    gather: under torch.distributed, the candidates are the queries of every process (gathered
        with their gradients) and the support queue receives the keys of every process in rank
        order, so every process holds the same queue.

    State (buffers, checkpointed): the support queue ``[K, D]`` (float32), the write pointer
    and the number of rows written so far (at most K).
    """

    conformance_params = {"size": 10}  # the kit's 3 updates of 6 keys wrap around

    def __init__(self, size: int = 16384, gather: bool = True) -> None:
        super().__init__()
        if size <= 0:
            raise ValueError(f"support queue size must be positive, got {size}")
        self.size = int(size)
        self.gather = gather
        self.register_buffer("support", torch.empty(0))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self._pointer = 0  # host copies of the buffers: no device sync per step
        self._filled = 0

    def setup(self, dim: int, num_samples: int | None = None) -> None:
        """Allocate the empty ``[K, dim]`` support queue."""
        self.support = torch.zeros(self.size, dim)
        self._pointer = self._filled = 0
        self.pointer.zero_()
        self.filled.zero_()

    @torch.no_grad()
    def nearest_neighbours(self, key: Tensor) -> Tensor:
        """key ``[N, D]`` -> ``[N, D]``: for each row, the written support entry of highest cosine
        similarity (the first one on a tie), or the key itself (detached) while the queue is empty."""
        if self.support.numel() == 0:
            raise RuntimeError("NearestNeighbourPositives.setup(dim) was not called by the objective")
        if self._filled == 0:
            return key.detach()
        support = self.support[: self._filled]  # [F, D]: writes start at row 0, so rows < F are written
        cosine = F.normalize(key.detach().to(support.dtype), dim=1) @ F.normalize(support, dim=1).T  # [N, F]
        return support.index_select(0, cosine.argmax(dim=1))

    def score(self, critic: Critic, query: Tensor, key: Tensor, index: Tensor | None = None) -> Scores:
        n = query.shape[0]
        if key.shape[0] != n:
            raise ValueError(f"query {tuple(query.shape)} and key {tuple(key.shape)} must have the same rows")
        gathered = self.gather and distributed.world_size() > 1
        queries = distributed.gather_with_grad(query) if gathered else query  # [M, D], M = W * N
        total = queries.shape[0]
        if total < 2:
            raise ValueError("nearest-neighbour positives need a batch of at least 2 samples (the other queries "
                             "are the negatives)")
        anchors = self.nearest_neighbours(key).to(query.dtype)  # [N, D], no gradient
        matrix = critic.similarity(queries, anchors).T  # [N, M]: row i = NN(key_i), column k = query k
        offset = distributed.rank() * n if gathered else 0
        rows = torch.arange(n, device=query.device)
        positive = torch.zeros(n, total, dtype=torch.bool, device=query.device)
        positive[rows, rows + offset] = True  # row i's own query sits at global column offset + i
        return Scores.from_matrix(matrix, positive)

    @torch.no_grad()
    def update(self, key: Tensor, index: Tensor | None = None) -> None:
        """Write the (gathered) ``key [N, D]`` over the oldest entries, in order, wrapping at the end."""
        key = distributed.gather(key.detach()) if self.gather else key.detach()
        key = key[-self.size :].to(self.support.dtype)  # more keys than slots: keep the newest
        n = key.shape[0]
        slots = (self._pointer + torch.arange(n, device=self.support.device)) % self.size
        self.support.index_copy_(0, slots, key.to(self.support.device))
        self._pointer = (self._pointer + n) % self.size
        self._filled = min(self.size, self._filled + n)
        self.pointer.fill_(self._pointer)
        self.filled.fill_(self._filled)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        # Accept a queue of the checkpoint's shape even if setup() allocated another one.
        saved = state_dict.get(prefix + "support")
        if saved is not None and saved.shape != self.support.shape:
            self.support = torch.empty_like(saved, device=self.support.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._pointer, self._filled = int(self.pointer), int(self.filled)
