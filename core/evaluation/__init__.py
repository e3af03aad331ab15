"""Evaluation of learned representations.

- :func:`extract_features`: embed an image tensor batch by batch into ``[N, D]`` features.
- :func:`knn_predict` / :func:`knn_accuracy`: cosine, temperature-weighted kNN monitor.
- :func:`linear_probe_accuracy`: logistic regression on standardised frozen features.
- :func:`save_loss_curve` / :func:`save_curves` / :func:`save_knn_curve` / :func:`save_embedding_map`:
  PNG plots (Agg, no pyplot); :func:`save_figure` writes any matplotlib ``Figure`` the same way.
"""

from __future__ import annotations

from .features import extract_features
from .knn import knn_accuracy, knn_predict
from .linear_probe import linear_probe_accuracy
from .plots import save_curves, save_embedding_map, save_figure, save_knn_curve, save_loss_curve

__all__ = [
    "extract_features",
    "knn_accuracy",
    "knn_predict",
    "linear_probe_accuracy",
    "save_curves",
    "save_embedding_map",
    "save_figure",
    "save_knn_curve",
    "save_loss_curve",
]
