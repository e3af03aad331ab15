"""Weighted k-nearest-neighbour monitor (InstDisc / MoCo style).

Every test feature votes with its ``k`` most cosine-similar training features; a neighbour
with similarity ``s`` contributes ``exp(s / temperature)`` to the score of its class and the
class with the largest score wins. Features are L2-normalised first, so only directions matter.

Memory is bounded by ``chunk_size``: one chunk holds a ``[chunk_size, N]`` similarity matrix
and a ``[chunk_size, num_classes]`` score matrix (e.g. 1024 x 60,000 float32 = 245 MB).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["knn_accuracy", "knn_predict"]


def _check_features(name: str, features: Tensor) -> None:
    if not isinstance(features, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    if features.dim() != 2:
        raise ValueError(f"{name} must have shape [n, dim], got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {features.dtype}")


def _check_labels(name: str, labels: Tensor, n: int, n_name: str) -> None:
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(
            f"{name} must have shape [{n}] (one label per row of {n_name}), "
            f"got shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {labels.dtype}")


def _validate(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    k: int,
    temperature: float,
    num_classes: int | None,
    chunk_size: int,
) -> int:
    """Check every argument of :func:`knn_predict`; return the number of classes to score."""
    _check_features("train_features", train_features)
    _check_features("test_features", test_features)
    n = train_features.shape[0]
    if n == 0:
        raise ValueError("train_features is empty (shape [0, dim]); the kNN needs training points")
    if test_features.shape[1] != train_features.shape[1]:
        raise ValueError(
            f"test_features has dim {test_features.shape[1]} (shape {tuple(test_features.shape)}) "
            f"but train_features has dim {train_features.shape[1]} "
            f"(shape {tuple(train_features.shape)})"
        )
    _check_labels("train_labels", train_labels, n, "train_features")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    low, high = int(train_labels.min()), int(train_labels.max())
    if low < 0:
        raise ValueError(f"train_labels must be >= 0, found {low}")
    if num_classes is None:
        return high + 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
    if high >= num_classes:
        raise ValueError(f"train_labels holds class {high} but num_classes is {num_classes}")
    return num_classes


def _predict_chunk(
    test: Tensor, train: Tensor, train_labels: Tensor, k: int, temperature: float, num_classes: int
) -> Tensor:
    """Predict one chunk.

    Args:
        test: ``[B, D]`` L2-normalised test features.
        train: ``[N, D]`` L2-normalised training features.
        train_labels: ``[N]`` int64 labels on the same device.

    Returns:
        ``[B]`` int64 predicted classes.
    """
    sim = test @ train.T  # [B, N]
    top_sim, top_idx = sim.topk(k, dim=1)  # [B, k], sorted descending
    # exp(s / T) up to a per-row factor exp(-max_s / T): the argmax is unchanged and small
    # temperatures cannot overflow to inf.
    weights = ((top_sim - top_sim[:, :1]) / temperature).exp()  # [B, k]
    neighbour_labels = train_labels[top_idx]  # [B, k]
    # Same as summing weight * one_hot(label) over neighbours, without the [B, k, C] tensor.
    scores = torch.zeros(test.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
    scores.scatter_add_(1, neighbour_labels, weights)  # [B, C]
    return scores.argmax(dim=1)


@torch.no_grad()
def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> Tensor:
    """Predict classes by a cosine, temperature-weighted kNN vote.

    Args:
        train_features: ``[N, D]`` floating-point features of the labelled bank.
        train_labels: ``[N]`` integer labels in ``[0, num_classes)``.
        test_features: ``[M, D]`` floating-point features to classify.
        k: Number of neighbours; clipped to ``N``.
        temperature: Weight of a neighbour with cosine similarity ``s`` is ``exp(s / temperature)``.
        num_classes: Number of classes; ``None`` means ``train_labels.max() + 1``.
        chunk_size: Number of test rows scored at once (bounds memory to
            ``chunk_size * (N + num_classes)`` floats).

    Returns:
        ``[M]`` int64 predicted labels, on the device of ``train_features``.
        Ties between class scores go to the smallest class index.
    """
    num_classes = _validate(
        train_features, train_labels, test_features, k, temperature, num_classes, chunk_size
    )
    device = train_features.device
    dtype = torch.promote_types(train_features.dtype, torch.float32)
    train = F.normalize(train_features.to(dtype), dim=1)
    labels = train_labels.to(device=device, dtype=torch.long)
    k = min(k, train.shape[0])
    predictions = [
        _predict_chunk(
            F.normalize(chunk.to(device=device, dtype=dtype), dim=1),
            train,
            labels,
            k,
            temperature,
            num_classes,
        )
        for chunk in test_features.split(chunk_size)
    ]
    if not predictions:  # M == 0
        return torch.empty(0, dtype=torch.long, device=device)
    return torch.cat(predictions)


@torch.no_grad()
def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> float:
    """Fraction in ``[0, 1]`` of test points whose :func:`knn_predict` label is right.

    Args:
        train_features: ``[N, D]`` features of the labelled bank.
        train_labels: ``[N]`` integer labels.
        test_features: ``[M, D]`` features to classify, ``M >= 1``.
        test_labels: ``[M]`` integer true labels.
        k, temperature, num_classes, chunk_size: As in :func:`knn_predict`.
    """
    _check_features("test_features", test_features)
    _check_labels("test_labels", test_labels, test_features.shape[0], "test_features")
    if test_features.shape[0] == 0:
        raise ValueError("test_features is empty (shape [0, dim]); accuracy is undefined")
    predictions = knn_predict(
        train_features, train_labels, test_features, k, temperature, num_classes, chunk_size
    )
    correct = predictions.eq(test_labels.to(device=predictions.device, dtype=torch.long))
    return correct.double().mean().item()
