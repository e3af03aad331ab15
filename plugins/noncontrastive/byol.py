"""BYOL (Grill et al. 2020): predict a momentum target network's projection of the other view.

Multi-crop (``local_views``): the target network sees the global views only; the online
prediction of every view j is compared with the target of every global view i != j.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from selfsup.interfaces import Batch, Critic, Encoder, Head, StepOutput

from ..common.heads import MLPHead, build_head, check_embedding_dim, check_prediction_width
from ..common.momentum import cosine_momentum, frozen_copy, momentum_update
from ..common.critics import CosineCritic, check_scores_width
from .base import MultiCropObjective, PredictionLoss, Similarity, cosine, pair_similarity, view_pairs


def byol_loss(prediction: Tensor, target: Tensor, similarity: Similarity = cosine) -> PredictionLoss:
    """``2 - 2 s(p, z')`` averaged over the batch: prediction, target ``[N, D]`` -> loss.

    With the cosine (the default) the loss lies in [0, 4] and equals the mean squared
    distance of the L2-normalised vectors. The caller passes the target network's output,
    which carries no gradient (stop-gradient). similarity: aligned pairs -> ``[N]``.
    """
    if prediction.shape != target.shape or prediction.dim() != 2:
        raise ValueError(f"prediction and target must both be [N, D], got {tuple(prediction.shape)} and "
                         f"{tuple(target.shape)}")
    mean = similarity(prediction, target).mean()
    return PredictionLoss(2.0 - 2.0 * mean, mean.detach())


def symmetric_byol_loss(p1: Tensor, p2: Tensor, z1_target: Tensor, z2_target: Tensor,
                        similarity: Similarity = cosine) -> PredictionLoss:
    """BYOL's symmetrised loss ``L + L~ = byol(p1, sg(z2')) + byol(p2, sg(z1'))`` (the paper sums
    the two directions; range [0, 8] with the cosine); similarity: the mean of both
    directions'. All inputs ``[N, D]``; targets are detached here."""
    forward = byol_loss(p1, z2_target.detach(), similarity)
    backward = byol_loss(p2, z1_target.detach(), similarity)
    return PredictionLoss(forward.loss + backward.loss, (forward.similarity + backward.similarity) / 2)


def multi_view_byol_loss(predictions: list[Tensor], targets: list[Tensor],
                         similarity: Similarity = cosine) -> PredictionLoss:
    """BYOL over multi-crop views: ``2 x`` the mean of ``byol(p_j, sg(z'_i))`` over the pairs
    (target view i, prediction view j), i < G, j != i.

    predictions: V online predictions ``[N, D]`` (the G global views first); targets: the
    target network's G global projections ``[N, D]`` (G <= V; detached here). The factor 2
    keeps the two-view scale at any V (range [0, 8] with the cosine); with V = G = 2 this is
    exactly :func:`symmetric_byol_loss`. similarity: the mean over pairs.
    """
    if not targets or len(predictions) < 2 or len(targets) > len(predictions):
        raise ValueError(f"BYOL needs 1 to V target views and V >= 2 predictions, got {len(targets)} and "
                         f"{len(predictions)}")
    terms = [byol_loss(predictions[j], targets[i].detach(), similarity)
             for i, j in view_pairs(len(targets), len(predictions))]
    loss = sum(t.loss for t in terms) * (2.0 / len(terms))
    return PredictionLoss(loss, sum(t.similarity for t in terms) / len(terms))


class BYOL(MultiCropObjective):
    """BYOL: online encoder + projector + predictor against a momentum target (encoder + projector).

    The projector and predictor are Linear-BN-ReLU-Linear MLPs (BN is what keeps BYOL from
    collapsing in practice). The target follows the online network by an EMA whose
    momentum rises from ``momentum`` to 1 on a cosine schedule (0.99 suits short runs, the
    paper's 0.996 long ones). Loss: ``2 - 2 cos(p, sg(z'))`` for both view orders, summed.

    momentum_schedule: ``cosine`` (paper) or ``constant``.
    similarity: the measure of a prediction against its target (any critic, through its
        aligned-pair form ``pair``; default cosine at T = 1, the paper's ``2 - 2 cos``). The
        loss is ``2 - 2 s`` per direction, so ``neg_sq_euclidean`` gives the unnormalised MSE.
    projector / predictor: a head replacing the default built from the ``*_dim`` / ``*_layers``
        settings (``{name: mlp, out_dim: ...}`` in a pipeline, or a ready ``nn.Module`` in
        Python); the projector's output width is then the embedding width.
    global_views / local_views: multi-crop (with ``data.augment: {name: multi_crop,
        global_crops: global_views}``): the target network sees only the ``global_views``
        global crops; the prediction of every view j (global or local) is compared with the
        target of every global view i != j, and the loss is 2 x the mean over those pairs
        (:func:`multi_view_byol_loss`; with the defaults 2 and 0, the two-view loss above).
    """

    def __init__(
        self,
        encoder: Encoder,
        embedding_dim: int = 128,
        projector_hidden_dim: int | None = 512,
        predictor_hidden_dim: int | None = 512,
        momentum: float = 0.99,
        momentum_schedule: Literal["cosine", "constant"] = "cosine",
        projector: Head | nn.Module | None = None,
        predictor: Head | nn.Module | None = None,
        similarity: Critic | None = None,
        global_views: int = 2,
        local_views: int = 0,
    ) -> None:
        super().__init__(encoder, global_views, local_views)
        check_embedding_dim(embedding_dim)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.projector, embedding_dim = build_head(projector, encoder.out_dim,
                                                   MLPHead(embedding_dim, projector_hidden_dim, 2, batch_norm=True))
        self.predictor, width = build_head(predictor, embedding_dim,
                                           MLPHead(embedding_dim, predictor_hidden_dim, 2, batch_norm=True))
        check_prediction_width(width, embedding_dim)
        self.similarity = check_scores_width(similarity if similarity is not None else CosineCritic(temperature=1.0),
                                             embedding_dim, "predictions and targets")
        self.target_encoder = frozen_copy(encoder)
        self.target_projector = frozen_copy(self.projector)
        self.base_momentum = float(momentum)
        self.momentum_schedule = momentum_schedule
        self.last_momentum = float(momentum)

    def _online(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.projector(self.encoder(x).global_)  # [N, E]
        return z, self.predictor(z)  # projection, prediction [N, E]

    @torch.no_grad()
    def _target(self, x: Tensor) -> Tensor:
        return self.target_projector(self.target_encoder(x).global_)  # [N, E]

    def forward(self, batch: Batch) -> StepOutput:
        views = self.all_views(batch)
        predictions = [self._online(v)[1] for v in views]  # V x [N, E], one pass per view
        targets = [self._target(v) for v in views[:self.global_views]]  # G x [N, E]: global views only
        terms = multi_view_byol_loss(predictions, targets, pair_similarity(self.similarity))
        return StepOutput(loss=terms.loss, logs={"similarity": terms.similarity, "target_momentum": self.last_momentum})

    def current_momentum(self, step: int, total_steps: int) -> float:
        if self.momentum_schedule == "cosine":
            return cosine_momentum(self.base_momentum, step, total_steps)
        return self.base_momentum

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Move the target toward the online network: ``target = m target + (1 - m) online``."""
        self.last_momentum = self.current_momentum(step, total_steps)
        momentum_update(self.target_encoder, self.encoder, self.last_momentum)
        momentum_update(self.target_projector, self.projector, self.last_momentum)
