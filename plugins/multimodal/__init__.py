"""Multimodal data and models: multi-view datasets, the two-level transformer, pairwise contrastive learning."""

from __future__ import annotations

from selfsup.registry import Registry

from .contrastive import PairwiseContrastive
from .datasets import multimodal_arrays, multiview, multiview_digits
from .encoder import TwoLevelTransformer


def register(registry: Registry) -> None:
    registry.register("dataset", "multiview", multiview)
    registry.register("dataset", "multiview_digits", multiview_digits)
    registry.register("dataset", "multimodal_arrays", multimodal_arrays)
    registry.register("encoder", "two_level_transformer", TwoLevelTransformer)
    registry.register("objective", "pairwise_contrastive", PairwiseContrastive)
