"""Two-view bundles without (or, for SimCLR, beside) explicit negatives.

``simclr`` (NT-Xent, the contrastive reference), ``byol``, ``simsiam``, ``barlow_twins``,
``vicreg``, ``dino``, ``swav`` (swapped prediction of Sinkhorn codes) and ``mmcr`` (nuclear
norm of the view centroids); each loss is a pure function in its module, wrapped by the
bundle. Their studies: ``examples/studies/noncontrastive_fashion.yaml`` (Fashion-MNIST) and
``examples/studies/collapse_simsiam.yaml`` (SimSiam with and without stop-gradient or
predictor).
"""

from __future__ import annotations

from selfsup.registry import Registry

from .barlow_twins import BarlowTwins
from .byol import BYOL
from .dino import DINO
from .mmcr import MMCR
from .simclr import SimCLR
from .simsiam import SimSiam
from .swav import SwAV
from .vicreg import VICReg


def register(registry: Registry) -> None:
    registry.register("objective", "simclr", SimCLR)
    registry.register("objective", "byol", BYOL)
    registry.register("objective", "simsiam", SimSiam)
    registry.register("objective", "barlow_twins", BarlowTwins)
    registry.register("objective", "vicreg", VICReg)
    registry.register("objective", "dino", DINO)
    registry.register("objective", "swav", SwAV)
    registry.register("objective", "mmcr", MMCR)
