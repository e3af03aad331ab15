"""The Deep InfoMax bundle: DIM encoders, learned critics, adversarial prior matching, the
``dim`` objective. Its study: ``examples/studies/dim_variants.yaml``."""

from __future__ import annotations

from selfsup.registry import Registry

from .critics import ConcatCritic, SeparableCritic
from .encoders import DIMConvEncoder
from .objective import DeepInfoMax
from .prior import AdversarialPrior


def register(registry: Registry) -> None:
    registry.register("encoder", "dim_conv", DIMConvEncoder)
    registry.register("critic", "separable", SeparableCritic)
    registry.register("critic", "concat", ConcatCritic)
    registry.register("prior", "adversarial", AdversarialPrior)
    registry.register("objective", "dim", DeepInfoMax)
