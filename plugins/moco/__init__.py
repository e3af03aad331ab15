"""The MoCo bundle: MoCo v1/v2 (``moco``, preset ``moco_v2``), MoCo v3 (``moco_v3``)."""

from __future__ import annotations

from selfsup.registry import Registry

from .objective import MoCo, moco_v2
from .v3 import MoCoV3


def register(registry: Registry) -> None:
    registry.register("objective", "moco", MoCo)
    registry.register("objective", "moco_v2", moco_v2)
    registry.register("objective", "moco_v3", MoCoV3)
