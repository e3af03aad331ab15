"""Class angles and nearest-prototype accuracy against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.plugins.angular.metrics import class_angles, class_means, nearest_prototype_accuracy


def _at(degrees: list[float]) -> torch.Tensor:
    radians = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([radians.cos(), radians.sin()], dim=1) * 3.0  # norms do not matter


def test_class_angles_by_hand() -> None:
    # class 0 at 0 and 10 degrees, class 1 at 90 and 100 degrees
    stats = class_angles(_at([0, 10, 90, 100]), torch.tensor([0, 0, 1, 1]))
    assert stats["intra_deg"] == pytest.approx(10.0)
    assert stats["inter_deg"] == pytest.approx((90 + 100 + 80 + 90) / 4)
    assert stats["ratio"] == pytest.approx(9.0)


def test_class_angles_needs_pairs() -> None:
    with pytest.raises(ValueError):
        class_angles(_at([0, 10]), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        class_angles(_at([0, 10]), torch.tensor([0]))


def test_class_means_and_nearest_prototype_accuracy() -> None:
    embeddings = _at([-20, 20, 80, 100]).float()
    labels = torch.tensor([0, 0, 1, 1])
    means = class_means(embeddings, labels, 2)
    torch.testing.assert_close(means, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), atol=1e-6, rtol=0)
    assert nearest_prototype_accuracy(embeddings, labels, means) == 1.0
    swapped = means.flip(0)
    assert nearest_prototype_accuracy(embeddings, labels, swapped) == 0.0
    assert nearest_prototype_accuracy(embeddings, torch.tensor([0, 1, 1, 1]), means) == 0.75
