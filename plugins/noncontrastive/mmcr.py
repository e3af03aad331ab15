"""MMCR (Yerxa et al. 2023): maximum manifold capacity representations.

Each image's V views are embedded and L2-normalised, ``z_{n,v} [E]``; their centroid is
``c_n = (1/V) sum_v z_{n,v}`` and the centroids of the batch form ``C [N, E]``. The loss is

    loss = -||C||_*  +  lambda * (1/N) sum_n ||Z_n||_*

with ``||.||_*`` the nuclear norm (the sum of singular values) and ``Z_n [V, E]`` image n's
views. Maximising ``||C||_*`` both pulls the views of an image together (a centroid of unit
vectors is long only when they agree) and spreads the centroids over many directions (for
a given Frobenius norm the nuclear norm is largest when the singular values are equal).
lambda = 0 is the paper's main setting and the official code's default; lambda > 0 adds an
explicit compression of each image's views.

Under torch.distributed ``C`` is the global batch's: the centroids are gathered with
gradients (``gather_with_grad``), every process computes the same ``||C||_*`` and DDP's
average of the gathered gradients gives exactly the one-process gradient. The per-image term
is a mean over this process's images; DDP's average of those means is the global mean.
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
from .base import MultiCropObjective


def nuclear_norm(x: Tensor) -> Tensor:
    """Sum of the singular values of ``x [..., M, D]`` -> ``[...]``, in float32 at least with
    autocast off (``torch.linalg.svdvals``, whose gradient is stable at repeated values)."""
    with torch.autocast(x.device.type, enabled=False):
        return torch.linalg.svdvals(at_least_float32(x)).sum(-1)


def centroids(views: Tensor) -> Tensor:
    """``[N, V, E]`` L2-normalised views -> their per-image mean ``[N, E]`` (length 1 when
    the views agree, shorter as they spread)."""
    return views.mean(dim=1)


class MMCRLoss(NamedTuple):
    """loss = -centroid_nuclear_norm + lambda * view_nuclear_norm; all scalars, the terms detached."""

    loss: Tensor
    centroid_nuclear_norm: Tensor
    view_nuclear_norm: Tensor


def mmcr_loss(views: Tensor, lambda_views: float = 0.0, gather: bool = True) -> MMCRLoss:
    """MMCR on ``views [N, V, E]`` (already L2-normalised along E).

    ``-||C||_*`` of the centroids ``C [N, E]`` (of the global batch: with ``gather`` the
    centroids of every process are gathered with gradients) plus ``lambda_views`` times the
    mean over this process's images of ``||Z_n||_*``, ``Z_n [V, E]``. Known answers: N images
    whose views all equal one unit vector u give ``||C||_* = sqrt(N)`` (rank 1, C = 1 u^T);
    N orthonormal centroids give N.
    """
    if views.dim() != 3 or views.shape[1] < 1:
        raise ValueError(f"views must be [N, V, E], got {tuple(views.shape)}")
    if lambda_views < 0:
        raise ValueError(f"lambda_views must be >= 0, got {lambda_views}")
    c = centroids(views)  # [N, E]
    if gather:
        c = distributed.gather_with_grad(c)  # [W*N, E]: the global batch
    centroid_norm = nuclear_norm(c)
    loss = -centroid_norm
    view_norm = torch.zeros((), device=views.device)
    if lambda_views > 0:
        view_norm = nuclear_norm(views).mean()  # [N] -> mean
        loss = loss + lambda_views * view_norm
    return MMCRLoss(loss, centroid_norm.detach(), view_norm.detach())


class MMCR(MultiCropObjective):
    """MMCR: maximise the nuclear norm of the matrix of per-image view centroids.

    Projector: Linear-BN-ReLU-Linear to ``embedding_dim`` (128, as the paper's CIFAR/STL
    runs), each view's projection L2-normalised. Views: ``global_views`` (default 2; more
    views help MMCR, e.g. ``global_views: 4`` with ``two_view``, which makes any number) and
    ``local_views`` smaller crops from ``multi_crop``; every view counts the same in the
    centroid. lambda_views: the weight of the mean per-image nuclear norm (0, the paper's
    main setting). projector: a head replacing the default (``{name: mlp, ...}`` or an
    ``nn.Module``).
    """

    def __init__(
        self,
        encoder: Encoder,
        embedding_dim: int = 128,
        projector_hidden_dim: int | None = 512,
        projector: Head | nn.Module | None = None,
        lambda_views: float = 0.0,
        global_views: int = 2,
        local_views: int = 0,
    ) -> None:
        super().__init__(encoder, global_views, local_views)
        check_embedding_dim(embedding_dim)
        if lambda_views < 0:
            raise ValueError(f"lambda_views must be >= 0, got {lambda_views}")
        self.projector, _ = build_head(projector, encoder.out_dim,
                                       MLPHead(embedding_dim, projector_hidden_dim, 2, batch_norm=True))
        self.lambda_views = float(lambda_views)

    def forward(self, batch: Batch) -> StepOutput:
        views = self.all_views(batch)
        z = torch.stack([self.project(v) for v in views], dim=1)  # [N, V, E], one pass per view
        terms = mmcr_loss(z, self.lambda_views)
        with torch.no_grad():
            centroid_length = centroids(z).norm(dim=1).mean()  # 1 when every image's views agree
        logs = {"centroid_nuclear_norm": terms.centroid_nuclear_norm, "centroid_length": centroid_length}
        if self.lambda_views > 0:
            logs["view_nuclear_norm"] = terms.view_nuclear_norm
        return StepOutput(loss=terms.loss, logs=logs)

    def project(self, x: Tensor) -> Tensor:
        """Images -> the L2-normalised projections ``[N, E]`` (what the loss compares)."""
        return F.normalize(self.projector(self.encoder(x).global_), dim=1)
