"""Tests of the logistic-regression linear probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfsup.evaluation import linear_probe_accuracy


def _clusters(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated Gaussian clusters in 10-D, with an offset and anisotropic scale."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = np.eye(3, 10) * 8.0
    features = centres[labels] + rng.normal(size=(n, 10))
    features = features * np.linspace(0.01, 100, 10) + 50.0  # standardisation must undo this
    return features.astype(np.float32), labels


def test_separable_data_is_solved() -> None:
    x_train, y_train = _clusters(300, seed=0)
    x_test, y_test = _clusters(300, seed=1)
    assert linear_probe_accuracy(x_train, y_train, x_test, y_test) == 1.0


def test_random_labels_give_chance() -> None:
    rng = np.random.default_rng(0)
    x_train, y_train = rng.normal(size=(400, 20)), rng.integers(0, 4, 400)
    x_test, y_test = rng.normal(size=(2000, 20)), rng.integers(0, 4, 2000)
    acc = linear_probe_accuracy(x_train, y_train, x_test, y_test)
    assert 0.18 < acc < 0.32  # chance is 0.25


def test_wrong_test_labels_score_zero() -> None:
    x_train, y_train = _clusters(200, seed=0)
    x_test, y_test = _clusters(100, seed=1)
    assert linear_probe_accuracy(x_train, y_train, x_test, (y_test + 1) % 3) == 0.0


def test_tensors_and_numpy_agree() -> None:
    x_train, y_train = _clusters(200, seed=2)
    x_test, y_test = _clusters(200, seed=3)
    y_test[:10] = (y_test[:10] + 1) % 3  # make 10 of 200 wrong: the result is not just 1.0
    from_numpy = linear_probe_accuracy(x_train, y_train, x_test, y_test, max_iter=200)
    from_torch = linear_probe_accuracy(
        torch.from_numpy(x_train),
        torch.from_numpy(y_train),
        torch.from_numpy(x_test),
        torch.from_numpy(y_test),
        max_iter=200,
    )
    assert isinstance(from_torch, float)
    assert from_torch == from_numpy == pytest.approx(0.95)


def test_requires_grad_tensors_are_accepted() -> None:
    x_train, y_train = _clusters(100, seed=4)
    features = torch.from_numpy(x_train).requires_grad_(True)
    acc = linear_probe_accuracy(features, torch.from_numpy(y_train), features, y_train)
    assert acc == 1.0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.zeros((10, 3)), np.zeros(9), np.zeros((4, 3)), np.zeros(4)), r"train_labels has shape \(9,\)"),
        ((np.zeros((10, 3)), np.arange(10) % 2, np.zeros((4, 2)), np.zeros(4)), r"feature dims differ"),
        ((np.zeros(10), np.arange(10) % 2, np.zeros((4, 3)), np.zeros(4)), r"train_features must have shape"),
        ((np.zeros((10, 3)), np.arange(10) % 2, np.zeros((4, 3)), np.zeros(3)), r"test_labels has shape \(3,\)"),
        ((np.zeros((10, 3)), np.zeros(10), np.zeros((4, 3)), np.zeros(4)), r"at least two classes"),
    ],
)
def test_invalid_arguments_raise(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        linear_probe_accuracy(*args)
