"""VICReg (Bardes, Ponce & LeCun 2022): variance-invariance-covariance regularisation.

Under torch.distributed every term is computed on the global batch: every process gathers
the embeddings of all processes (gradients flow back to its own rows) and computes the same
loss, which with DDP's gradient averaging is the one-process loss on the whole batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed
from selfsup.interfaces import Batch, Encoder, Head, StepOutput

from ..common.heads import MLPHead, build_head, check_embedding_dim
from ..common.precision import at_least_float32
from .base import TwoViewObjective


class VICRegTerms(NamedTuple):
    """loss = invariance_weight * invariance + variance_weight * variance + covariance_weight * covariance."""

    loss: Tensor
    invariance: Tensor
    variance: Tensor
    covariance: Tensor


def variance_term(z: Tensor, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """Hinge on the per-dimension std: ``mean_d relu(gamma - sqrt(Var(z_d) + eps))`` for z ``[N, D]``.

    A collapsed batch (zero variance) gives ``gamma - sqrt(eps)`` = 0.99 with the defaults.
    """
    return F.relu(gamma - torch.sqrt(z.var(dim=0) + eps)).mean()


def covariance_term(z: Tensor) -> Tensor:
    """Sum of squared off-diagonal covariances divided by D, for z ``[N, D]`` (N >= 2).

    0 when the dimensions are uncorrelated; ``(D - 1) c^2`` when every pair has covariance c.
    """
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (n - 1)  # [D, D]
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d


def vicreg_loss(
    z1: Tensor,
    z2: Tensor,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> VICRegTerms:
    """VICReg on z1, z2 ``[N, D]`` (N >= 2), as in the official code.

    invariance: mean squared error between the branches; variance: :func:`variance_term`
    averaged over the two branches; covariance: :func:`covariance_term` summed over them.
    """
    if z1.shape != z2.shape or z1.dim() != 2 or z1.shape[0] < 2:
        raise ValueError(f"z1 and z2 must both be [N, D] with N >= 2, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    z1, z2 = at_least_float32(z1), at_least_float32(z2)
    invariance = F.mse_loss(z1, z2)
    variance = (variance_term(z1, gamma, eps) + variance_term(z2, gamma, eps)) / 2
    covariance = covariance_term(z1) + covariance_term(z2)
    loss = invariance_weight * invariance + variance_weight * variance + covariance_weight * covariance
    return VICRegTerms(loss, invariance, variance, covariance)


class VICReg(TwoViewObjective):
    """VICReg: 25 * invariance + 25 * variance (std hinge, eps 1e-4) + 1 * covariance.

    Projector ("expander"): 3 Linear layers with BN-ReLU between them, 512-d for small
    images (the paper uses 8192).
    projector: a head replacing the default built from ``embedding_dim`` / ``projector_*``
        (``{name: mlp, ...}`` in a pipeline, or a ready ``nn.Module`` in Python).
    sync_bn: the default projector's batch norms use the statistics of the global batch
        under torch.distributed (as the paper's code, with SyncBatchNorm); no effect in one process.

    The variance, covariance and invariance terms always use the global batch.
    """

    def __init__(
        self,
        encoder: Encoder,
        embedding_dim: int = 512,
        projector_hidden_dim: int | None = 512,
        projector_layers: int = 3,
        projector: Head | nn.Module | None = None,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        eps: float = 1e-4,
        sync_bn: bool = False,
    ) -> None:
        super().__init__(encoder)
        check_embedding_dim(embedding_dim)
        for name, value in (("invariance_weight", invariance_weight), ("variance_weight", variance_weight),
                            ("covariance_weight", covariance_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.projector, _ = build_head(projector, encoder.out_dim, MLPHead(
            embedding_dim, projector_hidden_dim, projector_layers, batch_norm=True, sync_bn=sync_bn))
        self.weights = (float(invariance_weight), float(variance_weight), float(covariance_weight))
        self.eps = float(eps)

    def forward(self, batch: Batch) -> StepOutput:
        view1, view2 = self.two_views(batch)
        z1 = self.projector(self.encoder(view1).global_)  # [N, E]
        z2 = self.projector(self.encoder(view2).global_)
        z1, z2 = distributed.gather_with_grad(z1), distributed.gather_with_grad(z2)  # [W*N, E]: the global batch
        terms = vicreg_loss(z1, z2, *self.weights, eps=self.eps)
        return StepOutput(loss=terms.loss, logs={"invariance": terms.invariance.detach(),
                                                 "variance": terms.variance.detach(),
                                                 "covariance": terms.covariance.detach()})
