"""Performance benchmarks: ``selfsup bench step`` and ``selfsup bench quality``."""

from __future__ import annotations

from selfsup.registry import Registry


def register(registry: Registry) -> None:
    from . import quality, step

    registry.register("benchmark", "step", step.main, summary="images/s, per-phase breakdown and step/floor ratio of a pipeline")
    registry.register("benchmark", "quality", quality.main, summary="kNN accuracy against training wall-clock time (CSV + PNG)")
