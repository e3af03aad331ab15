"""The spherical classifier and the angular-margin objectives built on it.

Embeddings and class prototypes are both L2-normalised, so the classifier's scores are the
cosines ``cos θ_j`` between an embedding and each class prototype ``w_j``: a cosine critic
(temperature 1) of the embedding against the prototype matrix. ``Scores.from_matrix`` splits
them into the target-class cosine (positive) and the other classes' cosines (negatives: the
prototypes act as negatives), and a margin-softmax estimator turns them into the loss.
ArcFace, CosFace, SphereFace and the plain normalised-softmax baseline differ only in that
estimator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.interfaces import Batch, Encoder, MIEstimator, Objective, Scores, StepOutput

from ..common.critics import CosineCritic
from ..common.precision import at_least_float32
from .estimators import ArcFaceMargin, CosFaceMargin, NormalizedSoftmax, Preset, SphereFaceMargin


class SphericalClassifier(Objective):
    """Supervised classifier on the unit sphere: normalised embeddings vs normalised class prototypes.

    encoder: any encoder; its global vector (optionally through a Linear-BN neck to
        ``embedding_dim``) is the embedding.
    num_classes: C, filled from the data.
    estimator: reads raw cosines (positive: target class ``[N, 1]``, negatives: the other
        C-1 classes) — ``arcface``, ``cosface``, ``sphereface``, ``norm_softmax`` or any
        MI estimator. Default: ArcFace (s=64, m=0.5).
    prototype_lr_scale: learning-rate multiplier of the prototypes (their own parameter
        group); prototype_weight_decay: their weight decay (null: the optimiser's).

    Trains on ``batch.views[0]`` when an augmentation made views, else on ``batch.inputs``
    (images or a mapping of modalities). ``embed`` returns the L2-normalised embedding.
    """

    num_views = 1
    needs_labels = True

    def __init__(
        self,
        encoder: Encoder,
        num_classes: int,
        estimator: MIEstimator | None = None,
        embedding_dim: int | None = None,
        prototype_lr_scale: float = 1.0,
        prototype_weight_decay: float | None = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if embedding_dim is not None and embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        if not prototype_lr_scale > 0:
            raise ValueError(f"prototype_lr_scale must be > 0, got {prototype_lr_scale}")
        if prototype_weight_decay is not None and prototype_weight_decay < 0:
            raise ValueError(f"prototype_weight_decay must be >= 0, got {prototype_weight_decay}")
        self.encoder = encoder
        if embedding_dim is None:
            self.neck: nn.Module = nn.Identity()
            embedding_dim = encoder.out_dim
        else:  # ArcFace's embedding layer: FC followed by BN
            self.neck = nn.Sequential(nn.Linear(encoder.out_dim, embedding_dim, bias=False), nn.BatchNorm1d(embedding_dim))
        self.num_classes = num_classes
        self.prototypes = nn.Parameter(torch.randn(num_classes, embedding_dim) * 0.01)  # [C, E]
        self.critic = CosineCritic(temperature=1.0)
        self.estimator = estimator if estimator is not None else ArcFaceMargin()
        self.prototype_lr_scale = float(prototype_lr_scale)
        self.prototype_weight_decay = prototype_weight_decay

    # ------------------------------------------------------------------ scores
    def _embedding(self, x: Tensor | dict[str, Tensor]) -> Tensor:
        return self.neck(self.encoder(x).global_)  # [N, E], not normalised

    def cosines(self, x: Tensor | dict[str, Tensor]) -> Tensor:
        """Cosines ``[N, C]`` of each sample's embedding to every class prototype."""
        return self.critic(self._embedding(x), self.prototypes)

    def scores(self, cosines: Tensor, labels: Tensor) -> Scores:
        """Split cosines ``[N, C]`` into the target cosine ``[N, 1]`` and the other classes' ``[N, C-1]``."""
        if labels.dim() != 1 or labels.shape[0] != cosines.shape[0]:
            raise ValueError(f"labels must be [N] with N={cosines.shape[0]}, got {tuple(labels.shape)}")
        if bool((labels < 0).any()) or bool((labels >= self.num_classes).any()):
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1} (no unknown -1 labels)")
        target = F.one_hot(labels, self.num_classes).bool()  # [N, C]
        return Scores.from_matrix(cosines, target)

    # ------------------------------------------------------------------ objective
    def forward(self, batch: Batch) -> StepOutput:
        if batch.labels is None:
            raise ValueError(f"{type(self).__name__} is supervised: the batch has no labels")
        x = batch.views[0] if batch.views else batch.inputs
        cosines = self.cosines(x)
        estimate = self.estimator(self.scores(cosines, batch.labels))
        with torch.no_grad():
            accuracy = (cosines.argmax(1) == batch.labels).float().mean()
            target = at_least_float32(cosines).gather(1, batch.labels.view(-1, 1)).clamp(-1, 1)
            target_angle = torch.rad2deg(torch.acos(target)).mean()
        return StepOutput(estimate.loss, {"mi": estimate.mi, "train_acc": accuracy, "target_angle_deg": target_angle})

    def embed(self, x: Tensor | dict[str, Tensor]) -> Tensor:
        return F.normalize(self._embedding(x), dim=1)

    @torch.no_grad()
    def predict(self, x: Tensor | dict[str, Tensor]) -> Tensor:
        """Nearest-prototype class ``[N]`` (largest cosine)."""
        return self.cosines(x).argmax(1)

    def normalized_prototypes(self) -> Tensor:
        return F.normalize(self.prototypes.detach(), dim=1)  # [C, E]

    def parameter_groups(self) -> list[dict]:
        others = [p for n, p in self.named_parameters() if p.requires_grad and n != "prototypes"]
        prototypes: dict = {"params": [self.prototypes], "lr_scale": self.prototype_lr_scale}
        if self.prototype_weight_decay is not None:
            prototypes["weight_decay"] = self.prototype_weight_decay
        return [{"params": others}, prototypes]


class SoftmaxCE(SphericalClassifier):
    """Softmax cross-entropy on the spherical classifier, ``s·cos θ`` without margin (the baseline).

    preset ``standard`` (s=64) or ``small_data`` (s=16); ``scale`` overrides it. The other
    parameters are those of ``spherical_classifier``.
    """

    def __init__(self, encoder: Encoder, num_classes: int, scale: float | None = None, preset: Preset = "standard",
                 embedding_dim: int | None = None, prototype_lr_scale: float = 1.0,
                 prototype_weight_decay: float | None = 0.0) -> None:
        super().__init__(encoder, num_classes, NormalizedSoftmax(scale, preset), embedding_dim,
                         prototype_lr_scale, prototype_weight_decay)


class ArcFace(SphericalClassifier):
    """ArcFace on the spherical classifier: ``s·cos(θ + m)`` on the target (s=64, m=0.5; preset small_data s=16, m=0.3).

    scale / margin (radians): null takes the preset's value. Past θ > π - m the target is
    ``s·(cos θ - m·sin m)``; ``easy_margin`` uses the plain ``s·cos θ`` for θ > π/2 instead.
    The other parameters are those of ``spherical_classifier`` (embedding_dim: a Linear-BN
    neck; prototype_lr_scale / prototype_weight_decay: the prototypes' parameter group).
    """

    def __init__(self, encoder: Encoder, num_classes: int, scale: float | None = None, margin: float | None = None,
                 easy_margin: bool = False, preset: Preset = "standard", embedding_dim: int | None = None,
                 prototype_lr_scale: float = 1.0, prototype_weight_decay: float | None = 0.0) -> None:
        super().__init__(encoder, num_classes, ArcFaceMargin(scale, margin, easy_margin, preset), embedding_dim,
                         prototype_lr_scale, prototype_weight_decay)


class CosFace(SphericalClassifier):
    """CosFace on the spherical classifier: ``s·(cos θ - m)`` on the target (s=64, m=0.35; preset small_data s=16, m=0.2).

    scale / margin: null takes the preset's value. The other parameters are those of
    ``spherical_classifier``.
    """

    def __init__(self, encoder: Encoder, num_classes: int, scale: float | None = None, margin: float | None = None,
                 preset: Preset = "standard", embedding_dim: int | None = None, prototype_lr_scale: float = 1.0,
                 prototype_weight_decay: float | None = 0.0) -> None:
        super().__init__(encoder, num_classes, CosFaceMargin(scale, margin, preset), embedding_dim,
                         prototype_lr_scale, prototype_weight_decay)


class SphereFace(SphericalClassifier):
    """SphereFace on the spherical classifier: ψ(θ) = (-1)^k cos(mθ) - 2k with annealed λ (m=4).

    Target logit ``s·(λ cos θ + ψ(θ)) / (1 + λ)`` with ``λ = max(lambda_min, lambda_base·(1 +
    gamma·it)^(-power))`` (SphereFace's defaults: 1000, 0.12, 1, 5); scale: null takes the
    preset's (64, small_data 16). The other parameters are those of ``spherical_classifier``.
    """

    def __init__(self, encoder: Encoder, num_classes: int, scale: float | None = None, margin: int = 4,
                 lambda_base: float = 1000.0, gamma: float = 0.12, power: float = 1.0, lambda_min: float = 5.0,
                 preset: Preset = "standard", embedding_dim: int | None = None, prototype_lr_scale: float = 1.0,
                 prototype_weight_decay: float | None = 0.0) -> None:
        estimator = SphereFaceMargin(scale, margin, lambda_base, gamma, power, lambda_min, preset)
        super().__init__(encoder, num_classes, estimator, embedding_dim, prototype_lr_scale, prototype_weight_decay)

