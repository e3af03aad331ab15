"""SimCLR (Chen et al. 2020): NT-Xent with in-batch negatives, the contrastive reference.

Each of the 2N views in a batch is an anchor whose positive is the other view of its image
and whose negatives are the remaining 2N - 2 views; the loss is the mean cross-entropy of
``cos / T`` logits over the 2N anchors.

Multi-crop (``local_views``): the two-view contrast step is taken for every ordered pair
(key view i, query view j), i a global view and j any other view, and the losses averaged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.interfaces import Batch, Critic, Encoder, Estimate, Head, MIEstimator, NegativeSampler, StepOutput

from ..common.contrast import ContrastStep
from ..common.critics import CosineCritic
from ..common.heads import MLPHead, build_head, check_embedding_dim
from ..common.estimators import InfoNCE
from ..common.samplers import InBatchNegatives
from .base import MultiCropObjective


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Estimate:
    """NT-Xent: z1, z2 ``[N, D]`` (row i of each: two views of image i) -> ``Estimate(loss, mi)``,
    ``mi = log(2N - 1) - loss`` (the InfoNCE bound it is).

    Logits are cosine similarities divided by ``temperature`` between all 2N views, the
    view itself excluded; the target of view i is its partner. Collapsed embeddings (all
    equal) give ``log(2N - 1)``.
    """
    if z1.shape != z2.shape or z1.dim() != 2 or z1.shape[0] < 2:
        raise ValueError(f"z1 and z2 must both be [N, D] with N >= 2, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # [2N, D]
    logits = z @ z.T / temperature  # [2N, 2N]
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # [2N]
    loss = F.cross_entropy(logits, partner)
    return Estimate(loss=loss, mi=math.log(2 * n - 1) - loss.detach())


class SimCLR(MultiCropObjective):
    """SimCLR: NT-Xent over 2N - 2 in-batch negatives with a cosine critic (T = 0.5) and an MLP projector.

    Defaults for small data: temperature 0.5 (the SimCLR paper's best for small batches and
    CIFAR-10; 0.1-0.2 suit large batches and long runs), projector Linear-BN-ReLU-Linear to
    128-d. The critic, estimator and sampler are ordinary parts: any registered one fits (a
    memory sampler is set up with the projector's width and fed this step's keys).

    projector_layers: 1 (linear), 2 (default) or more; projector_batch_norm: BN in the
    projector's hidden layers.
    projector: a head replacing the default built from the ``*_dim`` / ``*_layers``
        settings (``{name: mlp, out_dim: ...}`` in a pipeline, or a ready ``nn.Module`` in
        Python); the projector's output width is then the embedding width.
    global_views / local_views: multi-crop (with ``data.augment: {name: multi_crop,
        global_crops: global_views}``): the contrast step (critic, sampler, estimator, as for
        two views) scores the queries of every view j against the positive keys of every
        global view i != j, and the loss and logs are the means over those G (V - 1) pairs;
        local views are queries only. Two views: view 1 against view 2 and back, the loss
        above. A memory sampler stores the keys of the last global view once per step.
    """

    def __init__(
        self,
        encoder: Encoder,
        critic: Critic | None = None,
        estimator: MIEstimator | None = None,
        sampler: NegativeSampler | None = None,
        embedding_dim: int = 128,
        projector_hidden_dim: int | None = None,
        projector_layers: int = 2,
        projector_batch_norm: bool = True,
        projector: Head | nn.Module | None = None,
        num_train: int = 0,
        global_views: int = 2,
        local_views: int = 0,
    ) -> None:
        super().__init__(encoder, global_views, local_views)
        check_embedding_dim(embedding_dim)
        self.projector, embedding_dim = build_head(projector, encoder.out_dim, MLPHead(
            embedding_dim, projector_hidden_dim, projector_layers, projector_batch_norm))
        self.contrast = ContrastStep.attach(
            self, critic if critic is not None else CosineCritic(temperature=0.5),
            estimator if estimator is not None else InfoNCE(),
            sampler if sampler is not None else InBatchNegatives(both_views=True), embedding_dim, num_train)

    def forward(self, batch: Batch) -> StepOutput:
        z = [self.project(v) for v in self.all_views(batch)]  # V x [N, E], one pass per view
        # query-major order, as the two-view step always ran (view 1 against view 2, then back):
        # a sampler that draws negatives per call (memory_bank) draws them in the same order
        pairs = sorted(self.pairs, key=lambda pair: pair[1])  # (key view i, query view j)
        stored = next(pair for pair in pairs if pair[0] == self.global_views - 1)  # the last global view's keys, once
        losses, logs = [], []
        for key, query in pairs:
            loss, pair_logs = self.contrast(z[query], z[key], batch.index, store=(key, query) == stored)
            losses.append(loss)
            logs.append(pair_logs)
        mean_logs = {name: sum(pair_logs[name] for pair_logs in logs) / len(logs) for name in logs[0]}
        return StepOutput(loss=sum(losses) / len(losses), logs=mean_logs)

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Feed this step's keys to a stateful sampler (a no-op for in-batch negatives)."""
        self.contrast.store_keys()
