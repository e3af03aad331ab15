"""Angular measurements of an embedding: class angles and nearest-prototype accuracy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["class_angles", "class_means", "nearest_prototype_accuracy"]


def _check(embeddings: Tensor, labels: Tensor) -> None:
    if embeddings.dim() != 2 or labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"expected embeddings [N, D] and labels [N], got {tuple(embeddings.shape)} and {tuple(labels.shape)}"
        )


@torch.no_grad()
def class_angles(embeddings: Tensor, labels: Tensor) -> dict[str, float]:
    """Mean pairwise angles (degrees) between embeddings of the same class and of different classes.

    embeddings ``[N, D]`` (normalised here), labels ``[N]``. Pairs (i, j) with i != j; intra
    averages over same-class pairs, inter over different-class pairs. Returns
    ``{"intra_deg", "inter_deg", "ratio"}`` with ratio = inter / intra (larger: classes are
    tighter relative to their separation).
    """
    _check(embeddings, labels)
    z = F.normalize(embeddings.double(), dim=1)
    angles = torch.rad2deg(torch.acos((z @ z.T).clamp(-1.0, 1.0)))  # [N, N]
    same = labels.view(-1, 1) == labels.view(1, -1)
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    intra_mask, inter_mask = same & off_diagonal, ~same
    if not intra_mask.any() or not inter_mask.any():
        raise ValueError("class_angles needs at least two samples of one class and two classes")
    intra = float(angles[intra_mask].mean())
    inter = float(angles[inter_mask].mean())
    return {"intra_deg": intra, "inter_deg": inter, "ratio": inter / intra if intra > 0 else math.inf}


@torch.no_grad()
def class_means(embeddings: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Normalised mean direction of each class ``[C, D]`` (a prototype for models without one)."""
    _check(embeddings, labels)
    z = F.normalize(embeddings.float(), dim=1)
    sums = torch.zeros(num_classes, z.shape[1], dtype=z.dtype).index_add_(0, labels, z)
    return F.normalize(sums, dim=1)


@torch.no_grad()
def nearest_prototype_accuracy(embeddings: Tensor, labels: Tensor, prototypes: Tensor) -> float:
    """Fraction of embeddings ``[N, D]`` whose most cosine-similar prototype ``[C, D]`` is their class."""
    _check(embeddings, labels)
    cos = F.normalize(embeddings.float(), dim=1) @ F.normalize(prototypes.float(), dim=1).T  # [N, C]
    return float((cos.argmax(1) == labels).float().mean())
