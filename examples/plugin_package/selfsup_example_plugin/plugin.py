"""The package's selfsup plugin: the module named in the ``selfsup.plugins`` entry point."""

from __future__ import annotations

from selfsup import hookimpl
from selfsup.registry import Registry

from .best_metrics import BestMetricsLogger
from .contrast import SmileContrast
from .smile import SMILE


@hookimpl
def selfsup_register(registry: Registry) -> None:
    """Add the SMILE estimator, the instance-discrimination bundle that uses it, and a metrics sink."""
    registry.register("estimator", "smile", SMILE)
    registry.register("objective", "smile_contrast", SmileContrast)
    registry.register("logger", "best_metrics", BestMetricsLogger)
