"""Frozen-feature evaluation of an objective's representation on the held-out split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import EvalConfig
from ..data import DataSplits
from ..evaluation import extract_features, knn_accuracy, linear_probe_accuracy, save_embedding_map
from ..interfaces import Objective


@torch.no_grad()
def evaluate(
    objective: Objective,
    data: DataSplits,
    cfg: EvalConfig,
    device: torch.device,
    embedding_map: Path | None = None,
) -> dict[str, Any]:
    """kNN (cosine, temperature-weighted) and linear-probe accuracy of ``objective.embed``.

    Features of the training split are the kNN memory and the probe's training set; the
    test split is scored. Writes a t-SNE map of the test embeddings to ``embedding_map``.
    """
    was_training = objective.training
    objective.eval()
    try:
        train = extract_features(objective.embed, data.train.inputs, cfg.batch_size, device)
        test = extract_features(objective.embed, data.test.inputs, cfg.batch_size, device)
    finally:
        objective.train(was_training)
    results: dict[str, Any] = {
        "knn_acc": knn_accuracy(
            train, data.train.labels, test, data.test.labels, k=cfg.knn_k, temperature=cfg.knn_temperature,
            num_classes=data.num_classes,
        ),
        "feature_dim": int(train.shape[1]),
    }
    if cfg.linear_probe:
        results["linear_acc"] = linear_probe_accuracy(train, data.train.labels, test, data.test.labels)
    if embedding_map is not None and cfg.plots:
        save_embedding_map(test, data.test.labels, embedding_map, max_points=cfg.tsne_points, class_names=data.class_names or None)
    return results
