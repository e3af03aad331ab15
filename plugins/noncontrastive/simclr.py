"""SimCLR (Chen et al. 2020): NT-Xent with in-batch negatives, the contrastive reference.

Each of the 2N views in a batch is an anchor whose positive is the other view of its image
and whose negatives are the remaining 2N - 2 views; the loss is the mean cross-entropy of
``cos / T`` logits over the 2N anchors.
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
from .base import TwoViewObjective


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


class SimCLR(TwoViewObjective):
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
    ) -> None:
        super().__init__(encoder)
        check_embedding_dim(embedding_dim)
        self.projector, embedding_dim = build_head(projector, encoder.out_dim, MLPHead(
            embedding_dim, projector_hidden_dim, projector_layers, projector_batch_norm))
        self.contrast = ContrastStep.attach(
            self, critic if critic is not None else CosineCritic(temperature=0.5),
            estimator if estimator is not None else InfoNCE(),
            sampler if sampler is not None else InBatchNegatives(both_views=True), embedding_dim, num_train)

    def forward(self, batch: Batch) -> StepOutput:
        view1, view2 = self.two_views(batch)
        z1, z2 = self.project(view1), self.project(view2)
        # each view is an anchor once: 2N anchors; view 2's projections are the keys a memory stores
        loss12, logs12 = self.contrast(z1, z2, batch.index)
        loss21, logs21 = self.contrast(z2, z1, batch.index, store=False)
        logs = {name: (value + logs21[name]) / 2 for name, value in logs12.items()}
        return StepOutput(loss=(loss12 + loss21) / 2, logs=logs)

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Feed this step's keys to a stateful sampler (a no-op for in-batch negatives)."""
        self.contrast.store_keys()
