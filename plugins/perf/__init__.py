"""Performance benchmark ``selfsup bench quality`` (``bench step`` lives in ``selfsup.plugins.bench``)."""

from __future__ import annotations

from selfsup.registry import Registry


def register(registry: Registry) -> None:
    from . import quality

    registry.register("benchmark", "quality", quality.main, summary="kNN accuracy against training wall-clock time (CSV + PNG)")
