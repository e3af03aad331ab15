"""Margin-softmax estimators: cross-entropy over scaled cosines with a margin on the target.

They read the :class:`~selfsup.interfaces.Scores` of a spherical classifier: ``positive
[N, 1]`` is the cosine of each embedding to its own class prototype, ``negative [N, C-1]``
its cosines to the other prototypes (the prototypes are the negatives). The target cosine
is replaced by its margin-adjusted value ψ, every cosine is multiplied by the scale s, and
the loss is InfoNCE (= softmax cross-entropy over the C classes) on those logits::

    loss = -log( e^{s ψ(cos θ_y)} / (e^{s ψ(cos θ_y)} + Σ_{j≠y} e^{s cos θ_j}) )

``mi = log C - loss`` is InfoNCE's lower bound on the mutual information between embedding
and class. Margins are computed in float32 whatever the autocast dtype.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from selfsup.interfaces import Estimate, MIEstimator, Scores

from ..common.estimators import InfoNCE
from ..common.precision import at_least_float32
from .margins import arcface_cosine, cosface_cosine, sphereface_cosine, sphereface_lambda

Preset = Literal["standard", "small_data"]

#: (scale, margin) per preset. ``standard``: the papers' face-recognition settings
#: (ArcFace s=64 m=0.5, CosFace s=64 m=0.35); ``small_data``: a few classes and a few
#: thousand samples, where s=64 saturates the softmax at once and m=0.5 is too hard.
PRESETS: dict[str, dict[str, tuple[float, float]]] = {
    "arcface": {"standard": (64.0, 0.5), "small_data": (16.0, 0.3)},
    "cosface": {"standard": (64.0, 0.35), "small_data": (16.0, 0.2)},
    "softmax": {"standard": (64.0, 0.0), "small_data": (16.0, 0.0)},
    "sphereface": {"standard": (64.0, 4.0), "small_data": (16.0, 4.0)},
}


def _resolve(family: str, preset: str, scale: float | None, margin: float | None) -> tuple[float, float]:
    if preset not in PRESETS[family]:
        raise ValueError(f"preset must be one of {', '.join(PRESETS[family])}, got {preset!r}")
    default_scale, default_margin = PRESETS[family][preset]
    scale = default_scale if scale is None else float(scale)
    margin = default_margin if margin is None else float(margin)
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    return scale, margin


class MarginSoftmax(MIEstimator):
    """Softmax cross-entropy over ``s·cos`` with the target cosine replaced by ``margin_cosine``.

    Subclasses implement :meth:`margin_cosine`; this class is the plain normalised softmax
    (NormFace) when used directly. Input scores must be raw cosines in [-1, 1] (they are
    clamped there).
    """

    def __init__(self, scale: float = 16.0) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)
        self._infonce = InfoNCE()

    def margin_cosine(self, cos: Tensor) -> Tensor:
        """Target cosines ``[N, P]`` (float32, in [-1, 1]) -> margin-adjusted cosines ``[N, P]``."""
        return cos

    def logits(self, scores: Scores) -> Scores:
        """The scaled logits: positive ``s·ψ(cos)`` ``[N, P]``, negative ``s·cos`` ``[N, K]`` (float32)."""
        if scores.negative is None or scores.negative.shape[1] == 0:
            raise ValueError("a margin softmax needs the other classes' cosines as negatives (C >= 2)")
        positive = self.margin_cosine(at_least_float32(scores.positive).clamp(-1.0, 1.0))
        negative = at_least_float32(scores.negative).clamp(-1.0, 1.0)
        return Scores(self.scale * positive, self.scale * negative)

    def forward(self, scores: Scores) -> Estimate:
        return self._infonce(self.logits(scores))

    def full_logits(self, cosines: Tensor, labels: Tensor) -> Tensor:
        """Class logits ``[N, C]`` from cosines ``[N, C]`` and labels ``[N]``: the margin on the target column."""
        cos = at_least_float32(cosines).clamp(-1.0, 1.0)
        target = cos.gather(1, labels.view(-1, 1))
        return self.scale * cos.scatter(1, labels.view(-1, 1), self.margin_cosine(target))

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


class NormalizedSoftmax(MarginSoftmax):
    """Normalised softmax cross-entropy ``s·cos θ`` without margin (the NormFace baseline).

    preset ``standard`` (s=64) or ``small_data`` (s=16); ``scale`` overrides it.
    """

    def __init__(self, scale: float | None = None, preset: Preset = "standard") -> None:
        super().__init__(_resolve("softmax", preset, scale, None)[0])


class ArcFaceMargin(MarginSoftmax):
    """ArcFace: target logit ``s·cos(θ + m)``, fallback ``s·(cos θ - m·sin m)`` past θ > π - m.

    preset ``standard``: s=64, m=0.5 (the paper); ``small_data``: s=16, m=0.3. ``scale`` and
    ``margin`` override the preset. ``easy_margin`` applies the margin only for θ < π/2.
    """

    def __init__(self, scale: float | None = None, margin: float | None = None, easy_margin: bool = False,
                 preset: Preset = "standard") -> None:
        scale, margin = _resolve("arcface", preset, scale, margin)
        super().__init__(scale)
        if not 0.0 <= margin < torch.pi / 2:
            raise ValueError(f"margin must be in [0, π/2) radians, got {margin}")
        self.margin = margin
        self.easy_margin = bool(easy_margin)

    def margin_cosine(self, cos: Tensor) -> Tensor:
        return arcface_cosine(cos, self.margin, self.easy_margin)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}, margin={self.margin:g}, easy_margin={self.easy_margin}"


class CosFaceMargin(MarginSoftmax):
    """CosFace (large-margin cosine loss): target logit ``s·(cos θ - m)``.

    preset ``standard``: s=64, m=0.35 (the paper); ``small_data``: s=16, m=0.2.
    """

    def __init__(self, scale: float | None = None, margin: float | None = None, preset: Preset = "standard") -> None:
        scale, margin = _resolve("cosface", preset, scale, margin)
        super().__init__(scale)
        if not 0.0 <= margin < 2.0:
            raise ValueError(f"margin must be in [0, 2), got {margin}")
        self.margin = margin

    def margin_cosine(self, cos: Tensor) -> Tensor:
        return cosface_cosine(cos, self.margin)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}, margin={self.margin:g}"


class SphereFaceMargin(MarginSoftmax):
    """SphereFace (A-Softmax) on the sphere: target ``s·(λ cos θ + ψ(θ)) / (1 + λ)``, ψ(θ) = (-1)^k cos(mθ) - 2k.

    λ anneals as ``max(lambda_min, lambda_base·(1 + gamma·it)^(-power))`` over training
    iterations (counted by this module in training mode and saved with the model), as in
    the SphereFace code. m is an integer angular multiplier (1..5, paper: 4).
    """

    def __init__(self, scale: float | None = None, margin: int = 4, lambda_base: float = 1000.0,
                 gamma: float = 0.12, power: float = 1.0, lambda_min: float = 5.0,
                 preset: Preset = "standard") -> None:
        super().__init__(_resolve("sphereface", preset, scale, None)[0])
        if isinstance(margin, bool) or int(margin) != margin or not 1 <= int(margin) <= 5:
            raise ValueError(f"margin must be an integer in 1..5, got {margin}")
        if lambda_base < 0 or lambda_min < 0 or gamma < 0 or power < 0:
            raise ValueError("lambda_base, lambda_min, gamma and power must be >= 0")
        self.margin = int(margin)
        self.lambda_base, self.gamma, self.power, self.lambda_min = lambda_base, gamma, power, lambda_min
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    @property
    def current_lambda(self) -> float:
        return sphereface_lambda(int(self.iteration), self.lambda_base, self.gamma, self.power, self.lambda_min)

    def margin_cosine(self, cos: Tensor) -> Tensor:
        return sphereface_cosine(cos, self.margin, self.current_lambda)

    def forward(self, scores: Scores) -> Estimate:
        estimate = super().forward(scores)
        if self.training:
            self.iteration += 1
        return estimate

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}, margin={self.margin}, lambda={self.current_lambda:g}"
