"""SimSiam (Chen & He 2021): a predictor and a stop-gradient instead of negatives or a momentum target.

The stop-gradient and the predictor are options so that the collapse study can remove them:
without the stop-gradient (or without the predictor) the embeddings collapse to a constant,
as in Figure 2 and Table 1 of the paper.

Multi-crop (``local_views``): the stop-gradient targets z come from the global views; the
prediction p_j of every view is compared with z_i of every global view i != j.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.interfaces import Batch, Critic, Encoder, Head, StepOutput

from ..common.heads import MLPHead, build_head, check_embedding_dim, check_prediction_width
from ..common.critics import CosineCritic, check_scores_width
from .base import MultiCropObjective, PredictionLoss, Similarity, cosine, pair_similarity, view_pairs


def simsiam_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor, stop_gradient: bool = True,
                 similarity: Similarity = cosine) -> PredictionLoss:
    """``-1/2 [s(p1, sg(z2)) + s(p2, sg(z1))]`` averaged over the batch; all inputs ``[N, D]``.

    With the cosine (the default): range [-1, 1], -1 when every prediction points along the
    other view's projection. ``stop_gradient=False`` lets gradients flow into z (the
    collapsing variant). similarity: aligned pairs -> ``[N]``.
    """
    shapes = {tuple(t.shape) for t in (p1, p2, z1, z2)}
    if len(shapes) != 1 or p1.dim() != 2:
        raise ValueError(f"p1, p2, z1, z2 must all be [N, D], got shapes {sorted(shapes)}")
    if stop_gradient:
        z1, z2 = z1.detach(), z2.detach()
    mean = 0.5 * (similarity(p1, z2).mean() + similarity(p2, z1).mean())
    return PredictionLoss(-mean, mean.detach())


def multi_view_simsiam_loss(predictions: list[Tensor], projections: list[Tensor], global_views: int,
                            stop_gradient: bool = True, similarity: Similarity = cosine) -> PredictionLoss:
    """SimSiam over multi-crop views: ``-mean s(p_j, sg(z_i))`` over the pairs (target view i,
    prediction view j), i < ``global_views``, j != i, each averaged over the batch.

    predictions, projections: V tensors ``[N, D]`` each, the global views first (only the
    first ``global_views`` projections are targets). With two views this is exactly
    :func:`simsiam_loss` (range [-1, 1] with the cosine). similarity: minus the loss.
    """
    if len(predictions) != len(projections) or len(predictions) < 2 or not 1 <= global_views <= len(predictions):
        raise ValueError(f"SimSiam needs V >= 2 predictions and projections and 1 to V global views, got "
                         f"{len(predictions)}, {len(projections)} and {global_views}")
    shapes = {tuple(t.shape) for t in (*predictions, *projections)}
    if len(shapes) != 1 or predictions[0].dim() != 2:
        raise ValueError(f"predictions and projections must all be [N, D], got shapes {sorted(shapes)}")
    targets = [z.detach() if stop_gradient else z for z in projections[:global_views]]
    pairs = view_pairs(global_views, len(predictions))
    mean = sum(similarity(predictions[j], targets[i]).mean() for i, j in pairs) / len(pairs)
    return PredictionLoss(-mean, mean.detach())


class SimSiam(MultiCropObjective):
    """SimSiam: projector + bottleneck predictor, loss -1/2[cos(p1, sg(z2)) + cos(p2, sg(z1))].

    Defaults for small images (the paper's CIFAR variant): projector of 2 Linear-BN(-ReLU)
    layers to ``embedding_dim`` ending in an affine-free BN; predictor Linear-BN-ReLU-Linear
    with a bottleneck of ``embedding_dim // 4``.

    stop_gradient: detach the projections the predictions are compared with (False
        collapses: ``examples/studies/collapse_simsiam.yaml``).
    predictor: true (the default bottleneck MLP), false (compare projections directly, which
        collapses), or a head (``{name: mlp, ...}``; a ready ``nn.Module`` in Python).
    projector: a head replacing the default built from ``embedding_dim`` / ``projector_*``
        (its output width is then the embedding width).
    similarity: the measure of a prediction against the other view's projection (any critic,
        through ``pair``; default cosine at T = 1, the paper's ``-cos``); the loss is ``-s``.
    fixed_predictor_lr: keep the predictor's learning rate at its starting value while the
        schedule decays the rest (the paper's Table 1, "fixed lr"); needs ``predictor``.
    projector_last_batch_norm: end the projector with an affine-free BN (the paper's
        architecture). It keeps every projection dimension at unit batch variance, so the
        projections cannot shrink to a point (their rank still drops when the method
        breaks); the collapse study turns it off to show the collapse plainly.
    global_views / local_views: multi-crop (with ``data.augment: {name: multi_crop,
        global_crops: global_views}``): the targets sg(z_i) are the global views'
        projections; the prediction p_j of every view (global or local) is compared with
        z_i of every global view i != j, and the loss is minus the mean over those pairs
        (:func:`multi_view_simsiam_loss`; with the defaults 2 and 0, the two-view loss above).
    """

    def __init__(
        self,
        encoder: Encoder,
        embedding_dim: int = 256,
        projector_hidden_dim: int | None = None,
        projector_layers: int = 2,
        predictor: Head | nn.Module | bool = True,
        predictor_hidden_dim: int | None = None,
        stop_gradient: bool = True,
        fixed_predictor_lr: bool = False,
        projector_last_batch_norm: bool = True,
        projector: Head | nn.Module | None = None,
        similarity: Critic | None = None,
        global_views: int = 2,
        local_views: int = 0,
    ) -> None:
        super().__init__(encoder, global_views, local_views)
        check_embedding_dim(embedding_dim)
        if fixed_predictor_lr and predictor is False:
            raise ValueError("fixed_predictor_lr needs a predictor (predictor: true)")
        hidden = projector_hidden_dim or encoder.out_dim
        self.projector, embedding_dim = build_head(projector, encoder.out_dim, MLPHead(
            embedding_dim, hidden, projector_layers, batch_norm=True, last_batch_norm=projector_last_batch_norm))
        self.predictor: nn.Module = nn.Identity()
        if predictor is not False:
            bottleneck = predictor_hidden_dim or max(embedding_dim // 4, 1)
            default = MLPHead(embedding_dim, bottleneck, 2, batch_norm=True)
            self.predictor, width = build_head(default if predictor is True else predictor, embedding_dim, default)
            check_prediction_width(width, embedding_dim)
        self.similarity = check_scores_width(similarity if similarity is not None else CosineCritic(temperature=1.0),
                                             embedding_dim, "predictions and projections")
        self.stop_gradient = stop_gradient
        self.fixed_predictor_lr = fixed_predictor_lr

    def forward(self, batch: Batch) -> StepOutput:
        views = self.all_views(batch)
        projections = [self.projector(self.encoder(v).global_) for v in views]  # V x [N, E], one pass per view
        predictions = [self.predictor(z) for z in projections]
        terms = multi_view_simsiam_loss(predictions, projections, self.global_views, self.stop_gradient,
                                        pair_similarity(self.similarity))
        with torch.no_grad():
            z_std = F.normalize(projections[0].detach().float(), dim=1).std(dim=0).mean()
        return StepOutput(loss=terms.loss, logs={"similarity": terms.similarity, "projection_std": z_std})

    def parameter_groups(self) -> list[dict]:
        """One group, or two with ``fixed_predictor_lr`` (the predictor's marked ``fixed_lr``)."""
        if not self.fixed_predictor_lr:
            return super().parameter_groups()
        predictor = {id(p) for p in self.predictor.parameters()}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in predictor]
        return [{"params": rest}, {"params": list(self.predictor.parameters()), "fixed_lr": True}]
