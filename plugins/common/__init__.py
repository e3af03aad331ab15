"""Parts shared by bundles: critics, MI estimators, negative samplers, projection heads."""

from __future__ import annotations

from selfsup.registry import Registry

from .critics import AngularCritic, BilinearCritic, CosineCritic, DotCritic, NegSquaredEuclideanCritic, RBFCritic
from .estimators import JSD, NWJ, DecoupledContrastive, DonskerVaradhan, InfoNCE
from .heads import MLPHead
from .nearest_neighbour import NearestNeighbourPositives
from .samplers import InBatchNegatives, MemoryBank, MomentumQueue


def register(registry: Registry) -> None:
    registry.register("critic", "dot", DotCritic)
    registry.register("critic", "cosine", CosineCritic)
    registry.register("critic", "bilinear", BilinearCritic)
    registry.register("critic", "neg_sq_euclidean", NegSquaredEuclideanCritic)
    registry.register("critic", "angular", AngularCritic)
    registry.register("critic", "rbf", RBFCritic)
    registry.register("estimator", "infonce", InfoNCE)
    registry.register("estimator", "jsd", JSD)
    registry.register("estimator", "dv", DonskerVaradhan)
    registry.register("estimator", "nwj", NWJ)
    registry.register("estimator", "dcl", DecoupledContrastive)
    registry.register("sampler", "in_batch", InBatchNegatives)
    registry.register("sampler", "momentum_queue", MomentumQueue)
    registry.register("sampler", "memory_bank", MemoryBank)
    registry.register("sampler", "nearest_neighbour", NearestNeighbourPositives)
    registry.register("head", "mlp", MLPHead)
