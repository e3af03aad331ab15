"""selfsup: representation learning by similarity from swappable parts.

Core: interfaces of the five parts, the registry, the plugin manager, config and engine.
Concrete parts and bundles live in :mod:`selfsup.plugins` and in third-party plugins.
"""

from .errors import ConfigError, DataError, PluginError, RegistryError, SelfsupError, TrainingDiverged
from .hookspecs import hookimpl
from .interfaces import (
    Batch,
    Critic,
    Encoder,
    Estimate,
    Features,
    MIEstimator,
    NegativeSampler,
    Objective,
    PriorMatcher,
    Scores,
    StepOutput,
)
from .plugin_manager import default_registry, load_registry
from .registry import Entry, Registry

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "ConfigError",
    "Critic",
    "DataError",
    "Encoder",
    "Entry",
    "Estimate",
    "Features",
    "MIEstimator",
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
    "load_registry",
]
