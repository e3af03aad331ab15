"""MoCo v3 (Chen, Xie & He 2021): symmetric momentum contrast with in-batch negatives, no queue."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from selfsup.interfaces import Batch, Critic, Encoder, Head, MIEstimator, NegativeSampler, StepOutput

from ..common.contrast import ContrastStep
from ..common.critics import CosineCritic, DotCritic
from ..common.estimators import InfoNCE
from ..common.heads import MLPHead, build_head, check_prediction_width
from ..common.momentum import cosine_momentum, frozen_copy
from ..common.samplers import InBatchNegatives
from ..common.split_batchnorm import convert_split_batchnorm
from .base import MomentumContrast, check_momentum, check_split_bn


def critic_temperature(critic: Critic) -> float | None:
    """The temperature of a dot or cosine critic (None for critics without one)."""
    if isinstance(critic, DotCritic):
        return critic.temperature
    if isinstance(critic, CosineCritic):
        return float(torch.exp(-critic.log_inv_temperature.detach()).item())
    value = getattr(critic, "temperature", None)
    return float(value) if isinstance(value, (int, float)) else None


class MoCoV3(MomentumContrast):
    """MoCo v3: predicted queries of each view against momentum keys of the other, in-batch negatives.

    loss = s * (ctr(q1, k2) + ctr(q2, k1)), q = predictor(projector(encoder(view))),
    k = momentum projector(momentum encoder(view)), ctr = InfoNCE of each query against the
    keys of the global batch (gathered over processes) at temperature T, and s = 2T by
    default (the paper's scaling, which makes the gradient scale independent of T).

    Defaults follow the paper's ResNet recipe: projector 2-layer MLP (hidden 4096, BN, output
    BN without affine) to 256-d, predictor 2-layer MLP (hidden 4096, BN, no output BN),
    momentum rising from ``momentum`` to 1 on a cosine schedule. The paper's temperature is
    1.0 for ResNets and 0.2 for ViTs; the default here is 0.2 (examples/moco_v3.yaml on digits).

    critic / estimator / sampler: any registry part (defaults: dot on normalised vectors at
        ``temperature``, InfoNCE, in-batch negatives). A queue or memory bank is updated with
        both views' keys after the step.
    loss_scale: multiplies the loss; null means 2T with T the critic's temperature.
    split_bn: batch-norm statistics over this many chunks of the local batch (SplitBatchNorm).
    projector / predictor: heads replacing the defaults (``{name: mlp, ...}``, or a ready
        ``nn.Module`` in Python); the projector's output width is then the embedding width.
    """

    def __init__(
        self,
        encoder: Encoder,
        critic: Critic | None = None,
        estimator: MIEstimator | None = None,
        sampler: NegativeSampler | None = None,
        embedding_dim: int = 256,
        hidden_dim: int = 4096,
        projector_layers: int = 2,
        predictor_layers: int = 2,
        temperature: float = 0.2,
        momentum: float = 0.99,
        loss_scale: float | None = None,
        split_bn: int = 1,
        projector: Head | nn.Module | None = None,
        predictor: Head | nn.Module | None = None,
        num_train: int = 0,
    ) -> None:
        super().__init__()
        self.base_momentum = check_momentum(momentum)
        if embedding_dim <= 0 or hidden_dim <= 0:
            raise ValueError(f"embedding_dim and hidden_dim must be positive, got {embedding_dim}, {hidden_dim}")
        self.split_bn = check_split_bn(split_bn)
        self.encoder = convert_split_batchnorm(encoder, self.split_bn)
        head, embedding_dim = build_head(projector, encoder.out_dim, MLPHead(
            embedding_dim, hidden_dim, projector_layers, batch_norm=True, last_batch_norm=True))
        self.projector = convert_split_batchnorm(head, self.split_bn)
        head, width = build_head(predictor, embedding_dim,
                                 MLPHead(embedding_dim, hidden_dim, predictor_layers, batch_norm=True))
        check_prediction_width(width, embedding_dim)
        self.predictor = convert_split_batchnorm(head, self.split_bn)
        self.key_encoder = frozen_copy(self.encoder)
        self.key_projector = frozen_copy(self.projector)
        self.contrast = ContrastStep.attach(
            self, critic if critic is not None else DotCritic(temperature=temperature),
            estimator if estimator is not None else InfoNCE(),
            sampler if sampler is not None else InBatchNegatives(), embedding_dim, num_train)
        if loss_scale is None:
            t = critic_temperature(self.critic)
            loss_scale = 2.0 * t if t is not None else 1.0
        if not (loss_scale > 0 and math.isfinite(loss_scale)):
            raise ValueError(f"loss_scale must be a positive number, got {loss_scale}")
        self.loss_scale = float(loss_scale)

    def _project_query(self, projected: Tensor) -> Tensor:
        return self.predictor(projected)

    def forward(self, batch: Batch) -> StepOutput:
        if len(batch.views) < 2:
            raise ValueError(f"MoCo v3 needs 2 augmented views per batch, got {len(batch.views)}")
        view1, view2 = batch.views[0], batch.views[1]
        query1, query2 = self._query(view1), self._query(view2)
        key1, key2 = self._key(view1), self._key(view2)
        loss12, logs = self._contrast(query1, key2, batch.index)
        loss21, _ = self._contrast(query2, key1, batch.index)  # keys stored in this order: key2, key1
        return StepOutput(loss=self.loss_scale * (loss12 + loss21), logs=logs)

    def current_momentum(self, step: int, total_steps: int) -> float:
        """The momentum applied after optimiser step ``step`` (0-based) of ``total_steps``.

        Cosine from ``momentum`` before the first step to 1 after the last one.
        """
        return cosine_momentum(self.base_momentum, step + 1, total_steps)
