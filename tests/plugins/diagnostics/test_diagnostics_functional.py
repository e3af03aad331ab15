"""Diagnostics against hand computations and known values."""

import math

import pytest
import torch
import torch.nn.functional as F
from scipy.special import i0

from selfsup.plugins.diagnostics.functional import (
    alignment,
    effective_rank,
    embedding_std,
    knn_leave_one_out,
    uniformity,
)

#: E exp(-2 ||u - v||^2) for u, v independent and uniform on S^1 is e^-4 I_0(4).
UNIFORM_CIRCLE = math.log(math.exp(-4.0) * i0(4.0))  # -1.57503


def circle(n: int, offset: float = 0.0) -> torch.Tensor:
    theta = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n + offset
    return torch.stack([theta.cos(), theta.sin()], dim=1)


def test_uniform_circle_constant_is_the_bessel_value():
    assert UNIFORM_CIRCLE == pytest.approx(-1.57503, abs=1e-5)


# --------------------------------------------------------------------------- std
def test_std_of_collapsed_embeddings_is_zero():
    z = torch.tensor([[3.0, -1.0, 2.0]]).repeat(50, 1) * torch.rand(50, 1).add(0.5)  # same direction, any length
    assert embedding_std(z).item() == pytest.approx(0.0, abs=1e-6)


def test_std_by_hand():
    # rows normalise to e1, e2, e1, e2: each column is [1, 0, 1, 0] or [0, 1, 0, 1], unbiased std sqrt(1/3)
    z = torch.tensor([[2.0, 0.0], [0.0, 5.0], [1.0, 0.0], [0.0, 0.1]])
    assert embedding_std(z).item() == pytest.approx(math.sqrt(1 / 3), rel=1e-6)


def test_std_of_isotropic_embeddings_is_one_over_sqrt_d():
    g = torch.Generator().manual_seed(0)
    for d in (16, 64):
        z = torch.randn(20000, d, generator=g)
        assert embedding_std(z).item() == pytest.approx(1 / math.sqrt(d), rel=0.02)


# --------------------------------------------------------------------------- effective rank
def test_rank_one_matrix_has_effective_rank_one():
    u, v = torch.randn(300, 1), torch.randn(1, 32)
    assert effective_rank(u @ v).item() == pytest.approx(1.0, abs=1e-3)


def test_equal_singular_values_give_full_rank_and_two_values_by_hand():
    assert effective_rank(torch.eye(8) * 3).item() == pytest.approx(8.0, rel=1e-5)
    # singular values 3 and 1: p = (3/4, 1/4), rank = exp(H) = 4^(3/4) * (4/3)^(3/4) ... computed directly
    p = torch.tensor([0.75, 0.25], dtype=torch.float64)
    expected = math.exp(-(p * p.log()).sum().item())  # 1.7548
    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0]))).item() == pytest.approx(expected, rel=1e-5)


def test_gaussian_effective_rank_approaches_d_and_never_exceeds_it():
    g = torch.Generator().manual_seed(1)
    d = 16
    for n in (50, 2000, 50000):
        rank = effective_rank(torch.randn(n, d, generator=g)).item()
        assert rank <= d + 1e-6
    assert rank == pytest.approx(d, rel=0.01)  # n = 50000: singular values nearly equal


def test_all_zero_embeddings_have_rank_one():
    assert effective_rank(torch.zeros(10, 4)).item() == 1.0


# --------------------------------------------------------------------------- alignment / uniformity
def test_alignment_by_hand():
    u = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    v = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # first pair orthogonal (||u - v||^2 = 2), second identical
    assert alignment(u, v).item() == pytest.approx(1.0)
    assert alignment(u, v, alpha=1.0).item() == pytest.approx(math.sqrt(2) / 2)
    assert alignment(u, -u).item() == pytest.approx(4.0)


def test_uniformity_of_collapsed_embeddings_is_zero():
    z = torch.tensor([[1.0, 2.0, 3.0]]).repeat(40, 1)
    assert uniformity(z).item() == pytest.approx(0.0, abs=1e-6)


def test_uniformity_by_hand_for_two_antipodal_points():
    # one pair at squared distance 4: log exp(-2 * 4) = -8
    assert uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])).item() == pytest.approx(-8.0)


def test_uniformity_on_the_circle_matches_the_bessel_value():
    n = 3000
    # equally spaced points: the mean over the n - 1 other points is a Riemann sum of the integral E,
    # so the mean over distinct pairs is exactly (n E_n - 1) / (n - 1) with E_n -> E
    value = uniformity(circle(n)).item()
    assert value == pytest.approx(math.log((n * math.exp(UNIFORM_CIRCLE) - 1) / (n - 1)), abs=1e-6)
    assert value == pytest.approx(UNIFORM_CIRCLE, abs=2e-3)
    random_points = F.normalize(torch.randn(4000, 2, generator=torch.Generator().manual_seed(2)), dim=1)
    assert uniformity(random_points).item() == pytest.approx(UNIFORM_CIRCLE, abs=0.03)


def test_knn_leave_one_out_by_hand():
    # clusters around (1, 0) (label 0) and (0, 1) (label 1); the odd point at (0.7, -0.7) is labelled 1
    # but its two nearest neighbours are (0.95, -0.31) and (1, 0): it is the only mistake with k = 2
    z = torch.tensor([[1.0, 0.0], [0.95, 0.31], [0.95, -0.31], [0.0, 1.0], [0.31, 0.95], [-0.31, 0.95],
                      [0.7, -0.7]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    assert knn_leave_one_out(z, labels, k=2).item() == pytest.approx(6 / 7)
    unlabelled = torch.tensor([0, 0, 0, 1, 1, 1, -1])  # the odd point neither votes nor counts
    assert knn_leave_one_out(z, unlabelled, k=2).item() == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [torch.zeros(5), torch.zeros(1, 3)])
def test_bad_shapes_are_rejected(bad):
    with pytest.raises(ValueError):
        embedding_std(bad)


def test_softmax_entropy_by_hand_uniform_and_one_hot():
    from selfsup.plugins.diagnostics.functional import softmax_entropy

    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, 0.0, 0.0]])
    # row 1: uniform over 4 -> log 4; row 2: p = (1/2, 1/6, 1/6, 1/6) at T = 1
    row2 = -(0.5 * math.log(0.5) + 3 * (1 / 6) * math.log(1 / 6))
    expected = (math.log(4) + row2) / 2 / math.log(4)
    assert softmax_entropy(logits, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)
    assert softmax_entropy(torch.zeros(5, 8)).item() == pytest.approx(1.0)  # uniform: 1
    assert softmax_entropy(torch.eye(6) * 100.0, temperature=0.1).item() == pytest.approx(0.0, abs=1e-6)  # one-hot
    with pytest.raises(ValueError, match="at least 2 columns"):
        softmax_entropy(torch.zeros(3, 1))
