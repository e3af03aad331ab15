"""The margin functions against hand computations, monotonicity, and half precision at |cos| = 1."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.plugins.angular.margins import (
    arcface_cosine,
    chebyshev_cos_multiple,
    cosface_cosine,
    sphereface_cosine,
    sphereface_lambda,
    sphereface_psi,
)

M = 0.5
EPS = 1e-3


def _cos(theta: float) -> torch.Tensor:
    return torch.tensor([math.cos(theta)], dtype=torch.float64)


@pytest.mark.parametrize(
    ("theta", "expected"),
    [
        (0.0, math.cos(M)),  # cos(0 + m)
        (math.pi / 4, math.cos(math.pi / 4 + M)),
        (math.pi - M - EPS, math.cos(math.pi - EPS)),  # just inside: still cos(θ + m) ≈ -1
        (math.pi - M + EPS, math.cos(math.pi - M + EPS) - M * math.sin(M)),  # past π - m: cos θ - m·sin m
        (math.pi, -1.0 - M * math.sin(M)),
    ],
)
def test_arcface_at_chosen_angles(theta: float, expected: float) -> None:
    assert arcface_cosine(_cos(theta), M).item() == pytest.approx(expected, abs=1e-9)


def test_arcface_fallback_keeps_the_target_decreasing_in_theta() -> None:
    theta = torch.linspace(0, math.pi, 3001, dtype=torch.float64)
    target = arcface_cosine(theta.cos(), M)
    assert bool((target[1:] < target[:-1]).all())
    raw = torch.cos(theta + M)  # without the fallback it turns up again past π - m
    assert raw[-1] > raw[theta < math.pi - M].min()


def test_arcface_easy_margin_only_below_right_angle() -> None:
    assert arcface_cosine(_cos(math.pi / 4), M, easy_margin=True).item() == pytest.approx(math.cos(math.pi / 4 + M))
    obtuse = 2 * math.pi / 3
    assert arcface_cosine(_cos(obtuse), M, easy_margin=True).item() == pytest.approx(math.cos(obtuse))


def test_cosface_subtracts_the_margin() -> None:
    cos = torch.tensor([1.0, 0.3, -1.0], dtype=torch.float64)
    torch.testing.assert_close(cosface_cosine(cos, 0.35), cos - 0.35)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_chebyshev_is_cos_of_multiple_angle(m: int) -> None:
    theta = torch.linspace(0, math.pi, 101, dtype=torch.float64)
    torch.testing.assert_close(chebyshev_cos_multiple(theta.cos(), m), torch.cos(m * theta))


@pytest.mark.parametrize(
    ("theta", "expected"),
    [
        (0.0, 1.0),
        (math.pi / 8, 0.0),  # k = 0: cos(π/2)
        (math.pi / 4, -1.0),  # k = 1 boundary: -cos(π) - 2 = -1 (continuous)
        (math.pi / 3, -math.cos(4 * math.pi / 3) - 2.0),  # k = 1: 0.5 - 2 = -1.5
        (math.pi, 1.0 - 2 * 4),  # ψ(π) = 1 - 2m
    ],
)
def test_sphereface_psi_at_chosen_angles(theta: float, expected: float) -> None:
    assert sphereface_psi(_cos(theta), 4).item() == pytest.approx(expected, abs=1e-9)


def test_sphereface_lambda_schedule_and_blend() -> None:
    assert sphereface_lambda(0) == 1000.0
    assert sphereface_lambda(100) == pytest.approx(1000.0 / 13.0)
    assert sphereface_lambda(10**6) == 5.0
    assert sphereface_lambda(10, base=100, gamma=1.0, power=2.0, lambda_min=0.0) == pytest.approx(100 / 121)
    cos = _cos(math.pi / 3)
    lam = 5.0
    assert sphereface_cosine(cos, 4, lam).item() == pytest.approx((lam * 0.5 + (-1.5)) / (1 + lam))
    assert sphereface_cosine(cos, 4, 0.0).item() == pytest.approx(-1.5)


def test_target_decreases_as_the_margin_grows() -> None:
    theta = torch.linspace(0.01, math.pi - 0.01, 400, dtype=torch.float64)
    cos = theta.cos()
    for fn, margins in (
        (arcface_cosine, [0.0, 0.1, 0.2, 0.35, 0.5]),
        (cosface_cosine, [0.0, 0.1, 0.2, 0.35, 0.5]),
        (sphereface_psi, [1, 2, 3, 4, 5]),
    ):
        values = torch.stack([fn(cos, m) for m in margins])  # [len(margins), 400]
        assert bool((values[1:] <= values[:-1] + 1e-12).all()), fn.__name__
        assert bool((values[-1] < values[0]).all()), fn.__name__  # strictly lower than without margin


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "fn",
    [
        lambda c: arcface_cosine(c, 0.5),
        lambda c: arcface_cosine(c, 0.5, easy_margin=True),
        lambda c: cosface_cosine(c, 0.35),
        lambda c: sphereface_cosine(c, 4, 5.0),
    ],
    ids=["arcface", "arcface_easy", "cosface", "sphereface"],
)
def test_no_nan_at_unit_cosine_in_half_precision(dtype: torch.dtype, fn) -> None:
    # exactly ±1, and values a rounding step outside [-1, 1] as a half-precision matmul gives
    cos = torch.tensor([1.0, -1.0, 1.004, -1.004, 0.999, 0.0], dtype=dtype, requires_grad=True)
    out = fn(cos)
    (grad,) = torch.autograd.grad((64 * out).sum(), cos)
    assert out.dtype == dtype
    assert bool(torch.isfinite(out).all()) and bool(torch.isfinite(grad).all())
    assert out[0].item() == pytest.approx(out[2].item())  # clamped to 1


def test_arcface_at_unit_cosine_in_half_precision_matches_float64() -> None:
    for dtype in (torch.float16, torch.bfloat16):
        got = arcface_cosine(torch.tensor([1.0, -1.0], dtype=dtype), M).double()
        expected = torch.tensor([math.cos(M), -1.0 - M * math.sin(M)], dtype=torch.float64)
        torch.testing.assert_close(got, expected, atol=1e-2, rtol=0)


def test_margin_estimators_keep_float64():
    import torch

    from selfsup.interfaces import Scores
    from selfsup.plugins.angular.estimators import ArcFaceMargin, CosFaceMargin

    positive = torch.full((4, 1), 0.5, dtype=torch.float64)
    negative = torch.full((4, 3), 0.1, dtype=torch.float64)
    for estimator in (ArcFaceMargin(), CosFaceMargin()):
        assert estimator(Scores(positive, negative)).loss.dtype == torch.float64
