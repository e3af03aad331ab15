"""The package's selfsup plugin: the module named in the ``selfsup.plugins`` entry point."""

from __future__ import annotations

from selfsup import hookimpl
from selfsup.registry import Registry

from .contrast import SmileContrast
from .smile import SMILE


@hookimpl
def selfsup_register(registry: Registry) -> None:
    """Add the SMILE estimator and the instance-discrimination bundle that uses it."""
    registry.register("estimator", "smile", SMILE)
    registry.register("objective", "smile_contrast", SmileContrast)
