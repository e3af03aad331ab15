"""The MoCo bundle."""

from __future__ import annotations

from selfsup.registry import Registry

from .objective import MoCo


def register(registry: Registry) -> None:
    registry.register("objective", "moco", MoCo)
