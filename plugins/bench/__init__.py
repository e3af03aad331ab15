"""The benchmarks that are not studies of one bundle: ``selfsup bench step`` (images/s and
what the framework costs beyond the networks) and ``selfsup bench mi`` (MI estimators against a
known answer). They use bundles and the engine's public API only; ``timing`` holds the clock
plumbing they share."""

from __future__ import annotations

from selfsup.registry import Registry


def register(registry: Registry) -> None:
    from . import mi, step

    registry.register("benchmark", "step", step.main, summary="images/s, per-phase breakdown and step/floor ratio of a pipeline")
    registry.register("benchmark", "mi", mi.main, summary="Known-answer MI benchmark on correlated Gaussians: "
                      "estimate vs truth per estimator and critic.")
