"""Collapse and similarity diagnostics (registry kind ``diagnostic``), usable with any objective.

Each registered diagnostic is a small callable ``ProbeEmbeddings -> float`` wrapping a pure
function of :mod:`.functional`; the training monitor (``monitor:`` section of a pipeline)
runs them on a fixed probe batch::

    monitor: {diagnostics: [embedding_std, effective_rank, alignment, uniformity], every: 50,
              collapse_std: 0.01, collapse_rank: 2.0}
"""

from __future__ import annotations

from selfsup.registry import Registry

from .measures import Alignment, EffectiveRank, EmbeddingStd, KnnAccuracy, SoftmaxEntropy, Uniformity


def register(registry: Registry) -> None:
    registry.register("diagnostic", "embedding_std", EmbeddingStd)
    registry.register("diagnostic", "effective_rank", EffectiveRank)
    registry.register("diagnostic", "alignment", Alignment)
    registry.register("diagnostic", "uniformity", Uniformity)
    registry.register("diagnostic", "softmax_entropy", SoftmaxEntropy)
    registry.register("diagnostic", "knn_accuracy", KnnAccuracy)
