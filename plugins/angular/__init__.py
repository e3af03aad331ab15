"""Supervised angular-margin objectives on a spherical classifier: ArcFace, CosFace, SphereFace, softmax."""

from __future__ import annotations

from selfsup.registry import Registry

from .classifier import ArcFace, CosFace, SoftmaxCE, SphereFace, SphericalClassifier
from .estimators import ArcFaceMargin, CosFaceMargin, NormalizedSoftmax, SphereFaceMargin


def register(registry: Registry) -> None:
    registry.register("estimator", "norm_softmax", NormalizedSoftmax)
    registry.register("estimator", "arcface", ArcFaceMargin)
    registry.register("estimator", "cosface", CosFaceMargin)
    registry.register("estimator", "sphereface", SphereFaceMargin)
    registry.register("objective", "spherical_classifier", SphericalClassifier)
    registry.register("objective", "arcface", ArcFace)
    registry.register("objective", "cosface", CosFace)
    registry.register("objective", "sphereface", SphereFace)
    registry.register("objective", "softmax_ce", SoftmaxCE)
