"""Angular margins as pure functions of cosines (the functional layer of the margin estimators).

Every function maps target-class cosines ``cos θ`` (any shape, any floating dtype) to the
margin-adjusted cosine that replaces them in the logit, before the scale ``s`` is applied:

- ArcFace (Deng et al. 2019): ``cos(θ + m)``, with the fallback ``cos θ - m·sin m`` once
  ``θ > π - m`` (where ``cos(θ + m)`` would stop decreasing) or ``cos θ`` for ``θ > π/2``
  with the easy margin;
- CosFace (Wang et al. 2018): ``cos θ - m``;
- SphereFace (Liu et al. 2017): ``ψ(θ) = (-1)^k cos(mθ) - 2k``, ``k = floor(mθ / π)``,
  blended with ``cos θ`` by the annealing weight λ: ``(λ cos θ + ψ(θ)) / (1 + λ)``.

Cosines are clamped to [-1, 1] first and ``sin θ`` is computed as
``sqrt(max(1 - cos², tiny))``, so neither values nor gradients become NaN at ``|cos θ| = 1``
in float16 or bfloat16.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..common.precision import at_least_float32

__all__ = [
    "arcface_cosine",
    "chebyshev_cos_multiple",
    "cosface_cosine",
    "sphereface_cosine",
    "sphereface_lambda",
    "sphereface_psi",
]


def _unit_clamp(cos: Tensor) -> Tensor:
    if not cos.is_floating_point():
        raise TypeError(f"cosines must be a floating tensor, got dtype {cos.dtype}")
    return cos.clamp(-1.0, 1.0)


def _sine(cos: Tensor) -> Tensor:
    """``sin θ`` for θ in [0, π] from ``cos θ`` in [-1, 1]; finite gradient at ``|cos θ| = 1``.

    Below ``tiny`` the clamp cuts the gradient to 0, so ``d sqrt(u)/du = ∞`` at u = 0 never
    meets the chain rule (a plain ``clamp(min=0)`` passes it on and gives NaN).
    """
    return torch.sqrt((1.0 - cos * cos).clamp(min=torch.finfo(cos.dtype).tiny))


def arcface_cosine(cos: Tensor, margin: float, easy_margin: bool = False) -> Tensor:
    """ArcFace's additive angular margin: ``cos(θ + m)`` from ``cos θ``.

    ``cos(θ + m) = cos θ cos m - sin θ sin m``. Past ``θ > π - m`` (``cos θ <= th`` with
    ``th = cos(π - m)``) ``cos(θ + m)`` would rise again, so ``cos θ - mm`` with
    ``mm = m·sin m`` is used instead (the insightface implementation). With ``easy_margin``
    the margin applies only where ``cos θ > 0`` and the plain ``cos θ`` is used elsewhere.
    """
    cos = _unit_clamp(cos)
    phi = cos * math.cos(margin) - _sine(cos) * math.sin(margin)
    if easy_margin:
        return torch.where(cos > 0, phi, cos)
    th = math.cos(math.pi - margin)
    mm = math.sin(math.pi - margin) * margin  # = m·sin m
    return torch.where(cos > th, phi, cos - mm)


def cosface_cosine(cos: Tensor, margin: float) -> Tensor:
    """CosFace's additive cosine margin: ``cos θ - m``."""
    return _unit_clamp(cos) - margin


#: Chebyshev polynomials T_m(x) = cos(m·acos x) for m = 0..5 (SphereFace's ``mlambda`` table).
_CHEBYSHEV = (
    lambda x: torch.ones_like(x),
    lambda x: x,
    lambda x: 2 * x**2 - 1,
    lambda x: 4 * x**3 - 3 * x,
    lambda x: 8 * x**4 - 8 * x**2 + 1,
    lambda x: 16 * x**5 - 20 * x**3 + 5 * x,
)


def chebyshev_cos_multiple(cos: Tensor, m: int) -> Tensor:
    """``cos(mθ)`` from ``cos θ`` as the Chebyshev polynomial ``T_m`` (m in 1..5): no ``acos`` gradient."""
    if not 1 <= m < len(_CHEBYSHEV):
        raise ValueError(f"m must be an integer in 1..{len(_CHEBYSHEV) - 1}, got {m}")
    return _CHEBYSHEV[m](_unit_clamp(cos))


def sphereface_psi(cos: Tensor, m: int) -> Tensor:
    """SphereFace's ``ψ(θ) = (-1)^k cos(mθ) - 2k`` with ``k = floor(mθ / π)``, θ in [0, π].

    ψ is continuous and decreasing on [0, π], ``ψ(0) = 1`` and ``ψ(π) = 1 - 2m``. ``k`` is
    piecewise constant, so it is computed without gradient from ``acos``.
    """
    cos = _unit_clamp(cos)
    with torch.no_grad():
        theta = torch.acos(at_least_float32(cos))
        k = torch.floor(m * theta / math.pi).clamp_(0, m - 1).to(cos.dtype)
    sign = 1.0 - 2.0 * torch.remainder(k, 2.0)  # (-1)^k
    return sign * chebyshev_cos_multiple(cos, m) - 2.0 * k


def sphereface_cosine(cos: Tensor, m: int, lam: float) -> Tensor:
    """The annealed SphereFace target: ``(λ cos θ + ψ(θ)) / (1 + λ)``; λ = 0 is the full margin."""
    if lam < 0:
        raise ValueError(f"lambda must be >= 0, got {lam}")
    cos = _unit_clamp(cos)
    return (lam * cos + sphereface_psi(cos, m)) / (1.0 + lam)


def sphereface_lambda(iteration: int, base: float = 1000.0, gamma: float = 0.12, power: float = 1.0,
                      lambda_min: float = 5.0) -> float:
    """SphereFace's annealing weight: ``λ = max(λ_min, base · (1 + γ·it)^(-power))``.

    Defaults are those of the SphereFace Caffe model (base 1000, γ 0.12, power 1, λ_min 5).
    """
    return max(lambda_min, base * (1.0 + gamma * iteration) ** (-power))
