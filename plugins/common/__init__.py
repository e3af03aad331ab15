"""Parts shared by bundles: critics, MI estimators, negative samplers, projection heads."""

from __future__ import annotations

from selfsup.registry import Registry


def register(registry: Registry) -> None:
    from . import critics, estimators, samplers

    for module in (critics, estimators, samplers):
        module.register(registry)
