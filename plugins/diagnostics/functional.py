"""Collapse and similarity diagnostics as pure functions of embeddings.

Every function reads embeddings ``[N, D]`` (N samples, D dimensions) and returns a 0-d
tensor. References: per-dimension std of L2-normalised outputs (Chen & He 2021, SimSiam,
section 4.1); effective rank / RankMe (Roy & Vetterli 2007; Garrido et al. 2023);
alignment and uniformity (Wang & Isola 2020).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["alignment", "effective_rank", "embedding_std", "knn_leave_one_out", "uniformity"]


def _check_embeddings(name: str, z: Tensor, min_rows: int = 1) -> Tensor:
    if not isinstance(z, Tensor) or z.dim() != 2:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"{name} must be a [N, D] tensor, got {shape}")
    if z.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {z.shape[0]}")
    return z.float()


def embedding_std(embeddings: Tensor) -> Tensor:
    """Mean over dimensions of the per-dimension std of L2-normalised embeddings.

    embeddings ``[N, D]`` -> scalar. 0 when every sample maps to the same direction
    (collapse); about ``1/sqrt(D)`` for directions spread evenly over the sphere (each
    coordinate of a uniform unit vector has variance 1/D). Uses the unbiased std (N - 1).
    """
    z = F.normalize(_check_embeddings("embeddings", embeddings, min_rows=2), dim=1)
    return z.std(dim=0).mean()


def effective_rank(embeddings: Tensor, eps: float = 1e-7) -> Tensor:
    """RankMe: ``exp`` of the Shannon entropy of the normalised singular values.

    embeddings ``[N, D]`` (not centred, as in RankMe) -> scalar in ``[1, min(N, D)]``.
    With singular values s_k, ``p_k = s_k / sum(s) + eps`` and the rank is
    ``exp(-sum p_k log p_k)``: 1 for a rank-1 matrix, ``min(N, D)`` when all singular values
    are equal. An all-zero matrix has rank 1 by convention (nothing is spread).
    """
    z = _check_embeddings("embeddings", embeddings)
    singular = torch.linalg.svdvals(z.double())  # [min(N, D)], descending
    total = singular.sum()
    if total <= 0:
        return torch.ones((), dtype=z.dtype, device=z.device)
    p = singular / total + eps
    rank = torch.exp(-(p * p.log()).sum())
    return rank.clamp(1.0, float(singular.numel())).to(z.dtype)


def alignment(embeddings: Tensor, positives: Tensor, alpha: float = 2.0) -> Tensor:
    """Mean ``||u - v||^alpha`` over positive pairs of L2-normalised embeddings.

    embeddings, positives ``[N, D]`` (row i of each is one positive pair) -> scalar in
    ``[0, 2^alpha]``: 0 when every pair maps to the same point (perfect alignment).
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    u = F.normalize(_check_embeddings("embeddings", embeddings), dim=1)
    v = F.normalize(_check_embeddings("positives", positives), dim=1)
    if u.shape != v.shape:
        raise ValueError(f"embeddings {tuple(u.shape)} and positives {tuple(v.shape)} must have the same shape")
    return (u - v).norm(dim=1).pow(alpha).mean()


def uniformity(embeddings: Tensor, t: float = 2.0) -> Tensor:
    """``log`` of the mean of ``exp(-t ||u - v||^2)`` over distinct pairs of normalised embeddings.

    embeddings ``[N, D]`` (N >= 2) -> scalar in ``[-4t, 0]``: 0 when all points coincide
    (collapse), lower when they spread. For points uniform on the circle S^1 and t = 2 the
    population value is ``log(e^-4 I_0(4)) = -1.5750`` (I_0: modified Bessel function).
    """
    if t <= 0:
        raise ValueError(f"t must be > 0, got {t}")
    z = F.normalize(_check_embeddings("embeddings", embeddings, min_rows=2), dim=1)
    squared = torch.pdist(z.double(), p=2).pow(2)  # [N (N - 1) / 2] distinct pairs
    log_mean = torch.logsumexp(-t * squared, dim=0) - math.log(squared.numel())
    return log_mean.to(z.dtype)


def softmax_entropy(logits: Tensor, temperature: float = 0.1) -> Tensor:
    """Mean entropy of ``softmax(logits / temperature)`` per row, divided by ``log K``.

    logits ``[N, K]`` (K >= 2; e.g. DINO's prototype scores) -> scalar in ``[0, 1]``: 1 when
    every row is the uniform distribution (DINO's collapse without sharpening), 0 when every
    row is one-hot.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = _check_embeddings("logits", logits)
    if z.shape[1] < 2:
        raise ValueError(f"softmax_entropy needs at least 2 columns (classes or prototypes), got {z.shape[1]}")
    log_p = torch.log_softmax(z.double() / temperature, dim=1)
    entropy = -(log_p.exp() * log_p).sum(1).mean()
    return (entropy / math.log(z.shape[1])).to(z.dtype)


def knn_leave_one_out(
    embeddings: Tensor, labels: Tensor, k: int = 20, temperature: float = 0.1
) -> Tensor:
    """Leave-one-out accuracy of a cosine, temperature-weighted kNN vote inside one set.

    embeddings ``[N, D]``, labels ``[N]`` (entries < 0 are unlabelled: they neither vote nor
    count) -> scalar in [0, 1]. Each labelled sample is classified by its ``k`` most
    cosine-similar other samples, a neighbour with similarity s voting ``exp(s / T)`` (the
    InstDisc / MoCo monitor), so it tracks class structure without a separate memory bank.
    """
    z = F.normalize(_check_embeddings("embeddings", embeddings, min_rows=2), dim=1)
    if labels.shape != (z.shape[0],):
        raise ValueError(f"labels must be [N] = [{z.shape[0]}], got {tuple(labels.shape)}")
    if k < 1 or temperature <= 0:
        raise ValueError(f"need k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    labelled = labels >= 0
    z, labels = z[labelled], labels[labelled].long().to(z.device)
    if z.shape[0] < 2:
        raise ValueError("leave-one-out kNN needs at least 2 labelled samples")
    k = min(k, z.shape[0] - 1)
    sim = z @ z.T  # [N, N]
    sim.fill_diagonal_(float("-inf"))  # a sample is not its own neighbour
    top_sim, top_idx = sim.topk(k, dim=1)  # [N, k]
    weights = ((top_sim - top_sim[:, :1]) / temperature).exp()  # [N, k], max-shifted
    scores = torch.zeros(z.shape[0], int(labels.max()) + 1, dtype=weights.dtype, device=z.device)
    scores.scatter_add_(1, labels[top_idx], weights)  # [N, C]
    return (scores.argmax(dim=1) == labels).float().mean()
