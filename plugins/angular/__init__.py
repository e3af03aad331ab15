"""Supervised angular-margin objectives on a spherical classifier: ArcFace, CosFace, SphereFace, softmax."""

from __future__ import annotations

from selfsup.registry import Registry


def register(registry: Registry) -> None:
    from . import estimators
    from .classifier import ArcFace, CosFace, SoftmaxCE, SphereFace, SphericalClassifier

    estimators.register(registry)
    registry.register("objective", "spherical_classifier", SphericalClassifier)
    registry.register("objective", "arcface", ArcFace)
    registry.register("objective", "cosface", CosFace)
    registry.register("objective", "sphereface", SphereFace)
    registry.register("objective", "softmax_ce", SoftmaxCE)
