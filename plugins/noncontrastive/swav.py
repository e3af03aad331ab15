"""SwAV (Caron et al. 2020): swapped prediction of online cluster assignments.

Each view's L2-normalised projection ``z [N, E]`` is scored against K learnable, L2-normalised
prototypes ``c [K, E]``: ``s = z c^T`` (cosines, ``[N, K]``). The codes ``q_i`` of a global
view i are an equipartitioned soft assignment of the batch to the prototypes, computed from
``s_i`` by Sinkhorn-Knopp without gradient; every other view j must predict them:

    loss = mean over pairs (i global, j != i) of  -1/N sum_n sum_k q_i[n, k] log softmax(s_j[n] / T)[k]

What keeps it from collapsing is the equipartition: the codes of a batch spread evenly over
the prototypes, so no prototype can take every image. Without it (``equipartition: false``,
codes ``softmax(s / epsilon)``) every image drifts to the same prototype.

Under torch.distributed the Sinkhorn sums run over the global batch (an all-reduce of the
per-process sums, as the reference code does), so the codes are those one process computes
on the whole batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed
from selfsup.interfaces import Batch, Encoder, Head, StepOutput

from ..common.heads import MLPHead, build_head, check_embedding_dim
from ..common.precision import at_least_float32
from .base import MultiCropObjective, view_pairs


def _sum_over_processes(x: Tensor) -> Tensor:
    """``x`` summed element-wise over every process (in place; ``x`` itself in one process)."""
    if distributed.world_size() > 1:
        dist.all_reduce(x)
    return x


def _max_over_processes(x: Tensor) -> Tensor:
    if distributed.world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


@torch.no_grad()
def sinkhorn_knopp(scores: Tensor, epsilon: float = 0.05, iterations: int = 3, shared_rows: int = 0) -> Tensor:
    """Equipartitioned soft assignments (codes) of samples to prototypes, no gradient.

    scores: ``[R, K]`` prototype scores of this process's rows. The first ``shared_rows`` rows
    are the same on every process (SwAV's queue) and count once; the others are this
    process's shard of the global batch. With W processes the problem has
    ``B = shared_rows + W (R - shared_rows)`` samples. Starting from ``Q = exp(scores / epsilon)``
    (shifted by the global maximum, which every normalisation divides out), each iteration

        Q[:, k] /= K * sum_b Q[b, k]      every prototype's total becomes 1/K  (global sum)
        Q[b, :] /= B * sum_k Q[b, k]      every sample's total becomes 1/B    (per row)

    and the result is ``B Q``: every row sums to 1 (exactly: the last step normalises rows),
    every prototype column to about B/K over the global batch (exactly at convergence).
    The sums over samples are all-reduced over processes, so every process gets its rows of
    the codes one process would compute on the whole batch.

    Computed in float32 (float64 for float64 scores) with autocast off, whatever the
    caller's precision. Returns ``[R, K]`` codes in that dtype.
    """
    if scores.dim() != 2 or scores.shape[1] < 1:
        raise ValueError(f"scores must be [R, K], got {tuple(scores.shape)}")
    if not 0 <= shared_rows <= scores.shape[0]:
        raise ValueError(f"shared_rows must be in [0, {scores.shape[0]}], got {shared_rows}")
    if not epsilon > 0 or iterations < 1:
        raise ValueError(f"need epsilon > 0 and iterations >= 1, got {epsilon} and {iterations}")
    with torch.autocast(scores.device.type, enabled=False):
        s = at_least_float32(scores.detach()) / epsilon  # [R, K]
        world = distributed.world_size()
        num_prototypes = s.shape[1]
        num_samples = shared_rows + world * (s.shape[0] - shared_rows)
        weight = torch.ones(s.shape[0], 1, dtype=s.dtype, device=s.device)  # [R, 1]
        weight[:shared_rows] = 1.0 / world  # a shared row is on every process: counted 1/W times each
        shift = _max_over_processes(s.max().reshape(1))
        q = torch.exp(s - shift)  # [R, K], entries in (0, 1]
        tiny = torch.finfo(q.dtype).tiny
        for _ in range(iterations):
            prototype_totals = _sum_over_processes((q * weight).sum(0, keepdim=True))  # [1, K]
            q /= prototype_totals.clamp_min(tiny) * num_prototypes
            q /= q.sum(1, keepdim=True).clamp_min(tiny) * num_samples  # [R, 1]
        return q * num_samples


class SwAVLoss(NamedTuple):
    """loss: the mean swapped-prediction cross-entropy; agreement: minus it (detached)."""

    loss: Tensor
    agreement: Tensor


def swapped_prediction_loss(scores: list[Tensor], codes: list[Tensor], temperature: float = 0.1) -> SwAVLoss:
    """Cross-entropy of the codes of global view i and the prediction ``softmax(s_j / T)`` of
    every other view j, averaged over the pairs of :func:`~.base.view_pairs` and the samples.

    scores: V prototype scores ``[N, K]`` (the G global views first); codes: G targets
    ``[N, K]`` (rows summing to 1, no gradient). ``-mean_n sum_k q_i[n, k] log p_j[n, k]``
    per pair, in float32 at least.
    """
    if not codes or len(scores) < 2 or len(codes) > len(scores):
        raise ValueError(f"SwAV needs 1 to V code views and V >= 2 score views, got {len(codes)} and {len(scores)}")
    log_p = [F.log_softmax(at_least_float32(s) / temperature, dim=1) for s in scores]  # V x [N, K]
    terms = [-(codes[i].detach() * log_p[j]).sum(1).mean() for i, j in view_pairs(len(codes), len(scores))]
    loss = torch.stack(terms).mean()
    return SwAVLoss(loss, -loss.detach())


class SwAV(MultiCropObjective):
    """SwAV: swapped prediction of Sinkhorn-equipartitioned codes over K learned prototypes.

    Projector: Linear-BN-ReLU-Linear to ``embedding_dim`` (128, the paper's), L2-normalised.
    num_prototypes: K (the paper: 3,000 for ImageNet; 300 here, for small data such as
        digits and Fashion-MNIST — roughly 10-30 per class).
    temperature: T of the predictions ``softmax(s / T)`` (0.1). epsilon: the entropic
        regularisation of Sinkhorn-Knopp (0.05; the paper's small-batch runs use 0.03).
    sinkhorn_iterations: 3, as in the paper.
    equipartition: codes by Sinkhorn-Knopp (true) or ``softmax(s / epsilon)`` (false: the
        broken variant, which collapses every image onto one prototype).
    queue_size: past projections of the global views (one FIFO per global view, over the
        global batch) whose scores join the batch's in Sinkhorn-Knopp, for batches smaller
        than K (the paper: 3,840 at batch 256); 0 turns it off. Filled after every step from
        step ``queue_start_step`` on, used once full; the codes of the batch's rows are kept.
    freeze_prototypes_steps: the prototypes get no update for this many first steps (313,
        the paper's first ImageNet epoch; about an epoch of your data is the rule).
    The prototypes are re-normalised to unit length after every step.
    projector: a head replacing the default (``{name: mlp, ...}`` or an ``nn.Module``).
    global_views / local_views: multi-crop, as DINO: codes come from the global views; every
        view j predicts the codes of every global view i != j.
    """

    #: the kit's one step also checks the prototypes' gradient (frozen by default at step 0)
    conformance_params = {"freeze_prototypes_steps": 0}

    def __init__(
        self,
        encoder: Encoder,
        embedding_dim: int = 128,
        projector_hidden_dim: int | None = 512,
        projector: Head | nn.Module | None = None,
        num_prototypes: int = 300,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        equipartition: bool = True,
        queue_size: int = 0,
        queue_start_step: int = 0,
        freeze_prototypes_steps: int = 313,
        global_views: int = 2,
        local_views: int = 0,
    ) -> None:
        super().__init__(encoder, global_views, local_views)
        check_embedding_dim(embedding_dim)
        if num_prototypes < 2:
            raise ValueError(f"num_prototypes must be >= 2, got {num_prototypes}")
        for name, value in (("temperature", temperature), ("epsilon", epsilon)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if sinkhorn_iterations < 1:
            raise ValueError(f"sinkhorn_iterations must be >= 1, got {sinkhorn_iterations}")
        for name, value in (("queue_size", queue_size), ("queue_start_step", queue_start_step),
                            ("freeze_prototypes_steps", freeze_prototypes_steps)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.projector, width = build_head(projector, encoder.out_dim,
                                           MLPHead(embedding_dim, projector_hidden_dim, 2, batch_norm=True))
        initial = nn.Linear(width, num_prototypes, bias=False).weight.detach()  # [K, E]
        self.prototypes = nn.Parameter(F.normalize(initial, dim=1))
        self.temperature, self.epsilon = float(temperature), float(epsilon)
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.equipartition = bool(equipartition)
        self.queue_size, self.queue_start_step = int(queue_size), int(queue_start_step)
        self.freeze_prototypes_steps = int(freeze_prototypes_steps)
        self.register_buffer("queue", torch.zeros(self.global_views, self.queue_size, width))  # [G, Q, E]
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))  # rows filled, up to Q
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._to_enqueue: list[Tensor] | None = None
        self._frozen_prototypes: Tensor | None = None

    # ------------------------------------------------------------------ parts of a step
    def normalised_projection(self, x: Tensor) -> Tensor:
        """Images -> ``z = projector(encoder(x)) / ||.||`` ``[N, E]``."""
        return F.normalize(self.projector(self.encoder(x).global_), dim=1)

    def prototype_scores(self, z: Tensor, prototypes: Tensor | None = None) -> Tensor:
        """``z [N, E]`` -> ``z c^T [N, K]`` in float32 at least (autocast off): the cosines of
        each projection with the unit prototypes."""
        prototypes = self.prototypes if prototypes is None else prototypes
        with torch.autocast(z.device.type, enabled=False):
            return at_least_float32(z) @ at_least_float32(prototypes).T

    def prototypes_frozen(self) -> bool:
        return int(self.steps_done) < self.freeze_prototypes_steps

    def queue_in_use(self) -> bool:
        return self.queue_size > 0 and int(self.queue_filled) >= self.queue_size

    def codes(self, scores: Tensor, view: int) -> Tensor:
        """Targets ``[N, K]`` of global view ``view`` from its scores ``[N, K]`` (no gradient):
        Sinkhorn-Knopp over the global batch, with the view's queue in front once it is full;
        ``softmax(scores / epsilon)`` without equipartition."""
        with torch.no_grad():
            scores = scores.detach()
            if not self.equipartition:
                return F.softmax(scores / self.epsilon, dim=1)
            shared = 0
            if self.queue_in_use():
                queued = self.prototype_scores(self.queue[view], self.prototypes.detach())  # [Q, K]
                scores, shared = torch.cat([queued.to(scores.dtype), scores]), self.queue_size
            return sinkhorn_knopp(scores, self.epsilon, self.sinkhorn_iterations, shared_rows=shared)[shared:]

    def forward(self, batch: Batch) -> StepOutput:
        views = self.all_views(batch)
        z = [self.normalised_projection(v) for v in views]  # V x [N, E], one pass per view
        prototypes = self.prototypes
        if self.prototypes_frozen():
            # a zero gradient, not a detached tensor: the prototypes stay in the graph at every
            # step (DDP's static graph); after_step also restores them (no weight decay either)
            self._frozen_prototypes = prototypes.detach().clone()
            prototypes = prototypes.detach() + 0.0 * prototypes
        scores = [self.prototype_scores(zv, prototypes) for zv in z]  # V x [N, K]
        codes = [self.codes(scores[i], i) for i in range(self.global_views)]  # G x [N, K]
        terms = swapped_prediction_loss(scores, codes, self.temperature)
        self._to_enqueue = [zv.detach() for zv in z[:self.global_views]] if self.queue_size else None
        with torch.no_grad():
            q = torch.cat(codes)  # [G*N, K]
            entropy = -(q * q.clamp_min(1e-12).log()).sum(1).mean()
            nearest = torch.cat(scores).argmax(1)  # [V*N]: each view's nearest prototype
            used = (torch.bincount(nearest, minlength=self.prototypes.shape[0]) > 0).sum().float()
        return StepOutput(loss=terms.loss, logs={"agreement": terms.agreement, "code_entropy": entropy,
                                                 "prototypes_used": used})

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Undo any move of frozen prototypes, re-normalise them, enqueue the step's projections."""
        if self._frozen_prototypes is not None:  # as they were before the step (already unit length)
            self.prototypes.copy_(self._frozen_prototypes)
            self._frozen_prototypes = None
        else:
            self.prototypes.copy_(F.normalize(self.prototypes, dim=1))
        if self._to_enqueue is not None and int(self.steps_done) >= self.queue_start_step:
            for view, z in enumerate(self._to_enqueue):
                self._enqueue(view, distributed.gather(z))
        self._to_enqueue = None
        self.steps_done += 1

    def _enqueue(self, view: int, z: Tensor) -> None:
        """Newest first: ``queue[view] = [z; queue[view]]`` cut to its size. z: ``[M, E]``."""
        rows = min(z.shape[0], self.queue_size)
        self.queue[view] = torch.cat([z[:rows].to(self.queue.dtype), self.queue[view, : self.queue_size - rows]])
        if view == 0:
            self.queue_filled.fill_(min(int(self.queue_filled) + rows, self.queue_size))

    def project(self, x: Tensor) -> Tensor:
        """Images -> the prototype scores ``[N, K]`` (cosines; what the collapse monitor watches:
        one prototype for every image makes the rows equal, rank 1)."""
        return self.prototype_scores(self.normalised_projection(x))
