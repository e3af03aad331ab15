"""The registered diagnostics: callables ``ProbeEmbeddings -> float`` over :mod:`.functional`."""

from __future__ import annotations

from selfsup.interfaces import Diagnostic, ProbeEmbeddings

from . import functional


class EmbeddingStd(Diagnostic):
    """Mean per-dimension std of L2-normalised embeddings: 0 when collapsed, ~1/sqrt(D) when spread."""

    def __call__(self, probe: ProbeEmbeddings) -> float:
        return float(functional.embedding_std(probe.embeddings))


class EffectiveRank(Diagnostic):
    """Effective rank (RankMe): exp of the entropy of the normalised singular values, 1 to min(N, D)."""

    def __call__(self, probe: ProbeEmbeddings) -> float:
        return float(functional.effective_rank(probe.embeddings))


class Alignment(Diagnostic):
    """Alignment: mean ||u - v||^alpha over positive pairs (two augmented views), 0 is perfect.

    alpha: exponent of the distance (2 as in Wang & Isola 2020).
    """

    needs_views = True

    def __init__(self, alpha: float = 2.0) -> None:
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)

    def __call__(self, probe: ProbeEmbeddings) -> float:
        if probe.view1 is None or probe.view2 is None:
            raise ValueError("alignment needs the embeddings of two augmented views")
        return float(functional.alignment(probe.view1, probe.view2, self.alpha))


class Uniformity(Diagnostic):
    """Uniformity: log mean exp(-t ||u - v||^2) over distinct pairs; 0 when collapsed, lower is more uniform.

    t: the kernel's scale (2 as in Wang & Isola 2020).
    """

    def __init__(self, t: float = 2.0) -> None:
        if not t > 0:
            raise ValueError(f"t must be > 0, got {t}")
        self.t = float(t)

    def __call__(self, probe: ProbeEmbeddings) -> float:
        return float(functional.uniformity(probe.embeddings, self.t))


class SoftmaxEntropy(Diagnostic):
    """Mean entropy of ``softmax(z / temperature)`` over the probe, divided by ``log K``: 1 uniform, 0 one-hot.

    For heads whose output is a distribution (DINO's prototype logits, with ``monitor.source:
    project``); temperature: the one the loss applies (DINO's student: 0.1). DINO's collapse
    without sharpening drives it to 1: flag it with ``collapse_above: {softmax_entropy: 0.999}``.
    """

    def __init__(self, temperature: float = 0.1) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def __call__(self, probe: ProbeEmbeddings) -> float:
        return float(functional.softmax_entropy(probe.embeddings, self.temperature))


class KnnAccuracy(Diagnostic):
    """Leave-one-out kNN accuracy of the representation inside the labelled probe batch.

    Scores ``objective.embed`` (the representation) whatever ``monitor.source`` is: cosine
    similarity, neighbours weighted ``exp(s / T)``. k: neighbours per vote; temperature: T.
    """

    needs_labels = True

    def __init__(self, k: int = 20, temperature: float = 0.1) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.k, self.temperature = int(k), float(temperature)

    def __call__(self, probe: ProbeEmbeddings) -> float:
        if probe.labels is None:
            raise ValueError("knn_accuracy needs the probe's labels")
        features = probe.representation if probe.representation is not None else probe.embeddings
        return float(functional.knn_leave_one_out(features, probe.labels, self.k, self.temperature))
