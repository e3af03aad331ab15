"""Barlow Twins (Zbontar et al. 2021): make the cross-correlation of the two views' embeddings the identity.

Under torch.distributed the cross-correlation is that of the global batch: every process
gathers the embeddings of all processes (gradients flow back to its own rows) and computes
the same loss, which with DDP's gradient averaging is the one-process loss on the whole batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from selfsup import distributed
from selfsup.interfaces import Batch, Encoder, Head, StepOutput

from ..common.heads import MLPHead, build_head, check_embedding_dim
from ..common.precision import at_least_float32
from .base import TwoViewObjective


class BarlowTwinsTerms(NamedTuple):
    """loss = on_diagonal + lambda * off_diagonal (all scalars)."""

    loss: Tensor
    on_diagonal: Tensor
    off_diagonal: Tensor


def batch_standardise(z: Tensor, eps: float = 1e-5) -> Tensor:
    """``[N, D]`` -> each column with mean 0 and (biased) variance 1, as an affine-free BatchNorm."""
    return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)


def cross_correlation(z1: Tensor, z2: Tensor, eps: float = 1e-5) -> Tensor:
    """Cross-correlation ``C [D, D]`` of batch-standardised ``z1, z2 [N, D]``: ``C_ij = mean_n z1_ni z2_nj``."""
    if z1.shape != z2.shape or z1.dim() != 2 or z1.shape[0] < 2:
        raise ValueError(f"z1 and z2 must both be [N, D] with N >= 2, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    return batch_standardise(z1, eps).T @ batch_standardise(z2, eps) / z1.shape[0]  # [D, N] x [N, D]


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambda_offdiag: float = 0.0051, eps: float = 1e-5) -> BarlowTwinsTerms:
    """``sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2`` for z1, z2 ``[N, D]`` (C: :func:`cross_correlation`).

    Identical embeddings give ``C_ii = 1`` (on-diagonal term 0); identical whitened ones
    (decorrelated columns) give ``C = I`` and a loss of 0.
    """
    if lambda_offdiag < 0:
        raise ValueError(f"lambda_offdiag must be >= 0, got {lambda_offdiag}")
    c = cross_correlation(at_least_float32(z1), at_least_float32(z2), eps)
    diagonal = torch.diagonal(c)
    on = (1.0 - diagonal).pow(2).sum()
    off = c.pow(2).sum() - diagonal.pow(2).sum()
    return BarlowTwinsTerms(on + lambda_offdiag * off, on, off)


class BarlowTwins(TwoViewObjective):
    """Barlow Twins: cross-correlation of batch-normalised projections pushed to the identity (lambda = 0.0051).

    Projector: 3 Linear layers with BN-ReLU between them (the paper's shape, narrowed to
    ``embedding_dim`` = 512 for small images; the paper uses 8192).
    lambda_offdiag: weight of the redundancy-reduction (off-diagonal) term.
    projector: a head replacing the default built from ``embedding_dim`` / ``projector_*``
        (``{name: mlp, ...}`` in a pipeline, or a ready ``nn.Module`` in Python).
    sync_bn: the default projector's batch norms use the statistics of the global batch
        under torch.distributed (as the paper's code, with SyncBatchNorm); no effect in one process.

    The batch standardisation and the cross-correlation always use the global batch.
    """

    def __init__(
        self,
        encoder: Encoder,
        embedding_dim: int = 512,
        projector_hidden_dim: int | None = 512,
        projector_layers: int = 3,
        projector: Head | nn.Module | None = None,
        lambda_offdiag: float = 0.0051,
        sync_bn: bool = False,
    ) -> None:
        super().__init__(encoder)
        check_embedding_dim(embedding_dim)
        if lambda_offdiag < 0:
            raise ValueError(f"lambda_offdiag must be >= 0, got {lambda_offdiag}")
        self.projector, _ = build_head(projector, encoder.out_dim, MLPHead(
            embedding_dim, projector_hidden_dim, projector_layers, batch_norm=True, sync_bn=sync_bn))
        self.lambda_offdiag = float(lambda_offdiag)

    def forward(self, batch: Batch) -> StepOutput:
        view1, view2 = self.two_views(batch)
        z1 = self.projector(self.encoder(view1).global_)  # [N, E]
        z2 = self.projector(self.encoder(view2).global_)
        z1, z2 = distributed.gather_with_grad(z1), distributed.gather_with_grad(z2)  # [W*N, E]: the global batch
        terms = barlow_twins_loss(z1, z2, self.lambda_offdiag)
        return StepOutput(loss=terms.loss, logs={"on_diagonal": terms.on_diagonal.detach(),
                                                 "off_diagonal": terms.off_diagonal.detach()})
