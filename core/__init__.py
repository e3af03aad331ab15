"""selfsup: representation learning by similarity from swappable parts.

Core: interfaces of the five parts, the registry, the plugin manager, config and engine.
Concrete parts and bundles live in :mod:`selfsup.plugins` and in third-party plugins.

``hookimpl``, ``default_registry`` and ``load_registry`` load the plugin machinery (pluggy)
on first use, so importing a leaf such as :mod:`selfsup.interfaces` stays light; so does
``load_encoder`` (a finished run's encoder, see :mod:`selfsup.export`).
"""

from __future__ import annotations

from typing import Any

from .errors import CollapseDetected, ConfigError, DataError, PluginError, RegistryError, SelfsupError, TrainingDiverged
from .interfaces import (
    Batch,
    Critic,
    Encoder,
    Estimate,
    Features,
    MetricsLogger,
    MIEstimator,
    NegativeSampler,
    Objective,
    PriorMatcher,
    Scores,
    StepOutput,
)
from .registry import Entry, Registry

__version__ = "0.1.0"

_LAZY = {"hookimpl": "hookspecs", "default_registry": "plugin_manager", "load_registry": "plugin_manager",
         "load_encoder": "export"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'selfsup' has no attribute {name!r}")


__all__ = [
    "Batch",
    "CollapseDetected",
    "ConfigError",
    "Critic",
    "DataError",
    "Encoder",
    "Entry",
    "Estimate",
    "Features",
    "MIEstimator",
    "MetricsLogger",
    "NegativeSampler",
    "Objective",
    "PluginError",
    "PriorMatcher",
    "Registry",
    "RegistryError",
    "Scores",
    "SelfsupError",
    "StepOutput",
    "TrainingDiverged",
    "default_registry",
    "hookimpl",
    "load_encoder",
    "load_registry",
]
