"""Tests of the weighted kNN monitor against a brute-force reference and hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.evaluation import knn_accuracy, knn_predict


def brute_force_knn(
    train: torch.Tensor, labels: torch.Tensor, test: torch.Tensor, k: int, temperature: float
) -> torch.Tensor:
    """One test point at a time, with Python dicts: the definition, written out plainly."""
    predictions = []
    for point in test:
        sims = []
        for j, other in enumerate(train):
            cos = float(point @ other) / (float(point.norm()) * float(other.norm()))
            sims.append((cos, j))
        sims.sort(key=lambda pair: -pair[0])
        scores: dict[int, float] = {}
        for cos, j in sims[: min(k, len(sims))]:
            label = int(labels[j])
            scores[label] = scores.get(label, 0.0) + math.exp(cos / temperature)
        best = max(scores.values())
        predictions.append(min(c for c, s in scores.items() if s == best))
    return torch.tensor(predictions, dtype=torch.long)


@pytest.fixture
def random_problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    train = torch.randn(60, 8, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 5, (60,), generator=gen)
    test = torch.randn(37, 8, generator=gen, dtype=torch.float64)
    return train, labels, test


@pytest.mark.parametrize(("k", "temperature"), [(1, 0.1), (7, 0.5), (20, 0.07), (60, 2.0)])
def test_matches_brute_force(random_problem, k: int, temperature: float) -> None:
    train, labels, test = random_problem
    expected = brute_force_knn(train, labels, test, k, temperature)
    got = knn_predict(train, labels, test, k=k, temperature=temperature)
    assert got.dtype == torch.long and got.shape == (37,)
    assert torch.equal(got, expected)


def test_predictions_are_not_trivial(random_problem) -> None:
    """Guard the brute-force comparison: the vote really depends on the neighbours."""
    train, labels, test = random_problem
    got = knn_predict(train, labels, test, k=3)
    assert len(set(got.tolist())) >= 3


def _fan(temperature: float, k: int = 3) -> int:
    """Test point on the x axis. Class 0: one neighbour at cos 1. Class 1: two at cos 0.5.

    Class 2 sits opposite (cos -1) and is outside the top 3.
    Class 0 scores exp(1/T), class 1 scores 2 exp(0.5/T): class 0 wins iff T < 0.5 / ln 2.
    """
    angle = math.pi / 3  # cos = 0.5
    train = torch.tensor(
        [
            [2.0, 0.0],  # class 0, length 2: cosine ignores it
            [math.cos(angle), math.sin(angle)],  # class 1
            [math.cos(angle), -math.sin(angle)],  # class 1
            [-1.0, 0.0],  # class 2
            [-3.0, 0.0],  # class 2
        ]
    )
    labels = torch.tensor([0, 1, 1, 2, 2])
    test = torch.tensor([[0.5, 0.0]])
    return int(knn_predict(train, labels, test, k=k, temperature=temperature)[0])


def test_temperature_weighting_overrides_majority() -> None:
    # Plain majority among the 3 neighbours would say class 1 (two votes to one).
    assert _fan(0.1) == 0  # exp(10) = 22026 > 2 exp(5) = 297
    assert _fan(10.0) == 1  # exp(0.1) = 1.105 < 2 exp(0.05) = 2.103


def test_temperature_crossover_is_where_the_formula_puts_it() -> None:
    crossover = 0.5 / math.log(2)  # 0.7213
    assert _fan(crossover * 0.97) == 0
    assert _fan(crossover * 1.03) == 1


def test_far_neighbours_count_only_when_k_reaches_them() -> None:
    # With k=5 and a high temperature, all weights are ~1: class 1 and class 2 have two
    # neighbours each, class 1's are closer so it still wins; class 2 never wins.
    assert _fan(100.0, k=5) == 1
    # k=1: the nearest neighbour alone decides.
    assert _fan(100.0, k=1) == 0


def test_k_larger_than_n_uses_every_training_point() -> None:
    # One class-0 point at cos 1, two class-1 points at cos -1; T = 100 makes weights ~1.
    train = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [-2.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    test = torch.tensor([[1.0, 0.0]])
    assert int(knn_predict(train, labels, test, k=100, temperature=100.0)[0]) == 1
    assert int(knn_predict(train, labels, test, k=2, temperature=100.0)[0]) == 0


def test_k_larger_than_n_is_clipped(random_problem) -> None:
    train, labels, test = random_problem
    clipped = knn_predict(train, labels, test, k=10_000, temperature=0.3)
    assert torch.equal(clipped, knn_predict(train, labels, test, k=60, temperature=0.3))
    assert torch.equal(clipped, brute_force_knn(train, labels, test, 60, 0.3))


@pytest.mark.parametrize("chunk_size", [1, 5, 36, 37, 1000])
def test_chunking_does_not_change_predictions(random_problem, chunk_size: int) -> None:
    train, labels, test = random_problem
    whole = knn_predict(train, labels, test, k=9, chunk_size=10_000)
    assert torch.equal(knn_predict(train, labels, test, k=9, chunk_size=chunk_size), whole)


def test_features_are_normalised(random_problem) -> None:
    train, labels, test = random_problem
    scale = torch.rand(60, 1, dtype=torch.float64) * 100 + 0.01
    expected = knn_predict(train, labels, test, k=9)
    assert torch.equal(knn_predict(train * scale, labels, test * 3.0, k=9), expected)


def test_tiny_temperature_does_not_overflow(random_problem) -> None:
    """exp(1 / 1e-4) is inf in float64; the vote must still be the nearest neighbour's."""
    train, labels, test = random_problem
    nearest = knn_predict(train, labels, test, k=1)
    assert torch.equal(knn_predict(train, labels, test, k=20, temperature=1e-4), nearest)
    assert torch.equal(knn_predict(train.float(), labels, test.float(), k=20, temperature=1e-4),
                       nearest)


def test_float32_matches_float64(random_problem) -> None:
    train, labels, test = random_problem
    assert torch.equal(
        knn_predict(train.float(), labels, test.float(), k=9),
        knn_predict(train, labels, test, k=9),
    )


def test_num_classes_larger_than_labels_is_allowed(random_problem) -> None:
    train, labels, test = random_problem
    got = knn_predict(train, labels, test, k=9, num_classes=50)
    assert torch.equal(got, knn_predict(train, labels, test, k=9))


def test_empty_test_set_gives_empty_prediction(random_problem) -> None:
    train, labels, _ = random_problem
    got = knn_predict(train, labels, torch.empty(0, 8))
    assert got.shape == (0,) and got.dtype == torch.long


def test_accuracy_on_clusters_and_on_itself() -> None:
    gen = torch.Generator().manual_seed(1)
    centres = torch.eye(4, 16) * 5
    labels = torch.arange(200) % 4
    train = centres[labels] + torch.randn(200, 16, generator=gen)
    test_labels = torch.arange(100) % 4
    test = centres[test_labels] + torch.randn(100, 16, generator=gen)
    assert knn_accuracy(train, labels, test, test_labels, k=20) == 1.0
    wrong = (test_labels + 1) % 4
    assert knn_accuracy(train, labels, test, wrong, k=20) == 0.0
    # Half right: the fraction is computed over all test points.
    half = torch.where(torch.arange(100) < 50, test_labels, wrong)
    acc = knn_accuracy(train, labels, test, half, k=20)
    assert isinstance(acc, float) and acc == pytest.approx(0.5)


def test_accuracy_agrees_with_predictions(random_problem) -> None:
    train, labels, test = random_problem
    test_labels = torch.randint(0, 5, (37,), generator=torch.Generator().manual_seed(3))
    predictions = knn_predict(train, labels, test, k=9)
    expected = (predictions == test_labels).double().mean().item()
    assert knn_accuracy(train, labels, test, test_labels, k=9) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"train_features": torch.randn(10)}, r"train_features must have shape \[n, dim\].*\(10,\)"),
        ({"test_features": torch.randn(4, 3, 1)}, r"test_features must have shape.*\(4, 3, 1\)"),
        ({"test_features": torch.randn(4, 5)}, r"test_features has dim 5.*train_features has dim 3"),
        ({"train_labels": torch.zeros(9, dtype=torch.long)}, r"train_labels must have shape \[10\].*\(9,\)"),
        ({"train_labels": torch.zeros(10)}, r"integer"),
        ({"train_labels": -torch.ones(10, dtype=torch.long)}, r">= 0"),
        ({"k": 0}, r"k must be a positive integer"),
        ({"temperature": 0.0}, r"temperature must be > 0"),
        ({"chunk_size": 0}, r"chunk_size"),
        ({"num_classes": 2}, r"class 2 but num_classes is 2"),
        ({"train_features": torch.empty(0, 3), "train_labels": torch.empty(0, dtype=torch.long)}, r"empty"),
    ],
)
def test_invalid_arguments_raise(kwargs: dict, match: str) -> None:
    arguments = {
        "train_features": torch.randn(10, 3),
        "train_labels": torch.arange(10) % 3,
        "test_features": torch.randn(4, 3),
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        knn_predict(**arguments)


def test_accuracy_checks_test_labels() -> None:
    with pytest.raises(ValueError, match=r"test_labels must have shape \[4\].*\(3,\)"):
        knn_accuracy(torch.randn(10, 3), torch.arange(10) % 3, torch.randn(4, 3), torch.zeros(3))
