"""Two-view bundles without (or, for SimCLR, beside) explicit negatives.

``simclr`` (NT-Xent, the contrastive reference), ``byol``, ``simsiam``, ``barlow_twins`` and
``vicreg``; each loss is a pure function in its module, wrapped by the bundle. Benchmarks:
``selfsup bench noncontrastive`` (Fashion-MNIST) and ``selfsup bench collapse`` (SimSiam
with and without stop-gradient / predictor).
"""

from __future__ import annotations

from selfsup.registry import Registry

from .barlow_twins import BarlowTwins
from .byol import BYOL
from .simclr import SimCLR
from .simsiam import SimSiam
from .vicreg import VICReg


def register(registry: Registry) -> None:
    registry.register("objective", "simclr", SimCLR)
    registry.register("objective", "byol", BYOL)
    registry.register("objective", "simsiam", SimSiam)
    registry.register("objective", "barlow_twins", BarlowTwins)
    registry.register("objective", "vicreg", VICReg)
    from . import benchmark, collapse_study

    registry.register("benchmark", "noncontrastive", benchmark.main)
    registry.register("benchmark", "collapse", collapse_study.main)
