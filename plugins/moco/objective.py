"""MoCo v1/v2 (He et al. 2020; Chen et al. 2020): momentum contrast with a queue of keys."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.interfaces import Batch, Critic, Encoder, MIEstimator, NegativeSampler, Objective, StepOutput

from ..common.critics import DotCritic
from ..common.estimators import InfoNCE
from ..common.heads import mlp_head
from ..common.momentum import cosine_momentum, frozen_copy, momentum_update
from ..common.samplers import MomentumQueue


class MoCo(Objective):
    """MoCo: a query encoder trained against a momentum key encoder and a queue of keys.

    Defaults follow MoCo v2 on small data: MLP projection head to 128-d, dot critic on
    L2-normalised vectors with temperature 0.2, InfoNCE, queue of 4,096 keys, momentum 0.99.
    Any critic, estimator or sampler from the registry can replace the defaults.

    projector: ``mlp`` (v2), ``linear`` (v1) or ``none``.
    symmetric: also contrast view 2's query against view 1's key and average (as in the
        MoCo CIFAR demo's symmetric loss); both keys are enqueued.
    momentum_schedule: ``constant`` or ``cosine`` (from ``momentum`` to 1 over training).
    """

    def __init__(
        self,
        encoder: Encoder,
        critic: Critic | None = None,
        estimator: MIEstimator | None = None,
        sampler: NegativeSampler | None = None,
        projector: Literal["mlp", "linear", "none"] = "mlp",
        projector_hidden_dim: int | None = None,
        embedding_dim: int = 128,
        momentum: float = 0.99,
        momentum_schedule: Literal["constant", "cosine"] = "constant",
        symmetric: bool = False,
        num_train: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.encoder = encoder
        if projector == "none":
            self.projector: nn.Module = nn.Identity()
            embedding_dim = encoder.out_dim
        else:
            layers = 2 if projector == "mlp" else 1
            self.projector = mlp_head(encoder.out_dim, embedding_dim, projector_hidden_dim, num_layers=layers)
        self.key_encoder = frozen_copy(encoder)
        self.key_projector = frozen_copy(self.projector)
        self.critic = critic if critic is not None else DotCritic(temperature=0.2)
        self.estimator = estimator if estimator is not None else InfoNCE()
        self.sampler = sampler if sampler is not None else MomentumQueue(4096)
        self.sampler.setup(embedding_dim, num_train)
        self.base_momentum = momentum
        self.momentum_schedule = momentum_schedule
        self.symmetric = symmetric
        self._pending_keys: list[tuple[Tensor, Tensor | None]] = []

    def _query(self, x: Tensor) -> Tensor:
        return F.normalize(self.projector(self.encoder(x).global_), dim=1)  # [N, E]

    @torch.no_grad()
    def _key(self, x: Tensor) -> Tensor:
        return F.normalize(self.key_projector(self.key_encoder(x).global_), dim=1)  # [N, E]

    def _contrast(self, query: Tensor, key: Tensor, index: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        scores = self.sampler.score(self.critic, query, key, index)
        estimate = self.estimator(scores)
        with torch.no_grad():
            hardest_negative = scores.negative.max(dim=1).values if scores.negative is not None else None
            top1 = (scores.positive[:, 0] > hardest_negative).float().mean() if hardest_negative is not None else None
        logs = {"mi": estimate.mi}
        if top1 is not None:
            logs["instance_acc"] = top1
        return estimate.loss, logs

    def forward(self, batch: Batch) -> StepOutput:
        if len(batch.views) < 2:
            raise ValueError(f"MoCo needs 2 augmented views per batch, got {len(batch.views)}")
        view1, view2 = batch.views[0], batch.views[1]
        query1, key2 = self._query(view1), self._key(view2)
        loss, logs = self._contrast(query1, key2, batch.index)
        self._pending_keys = [(key2, batch.index)]
        if self.symmetric:
            query2, key1 = self._query(view2), self._key(view1)
            loss2, _ = self._contrast(query2, key1, batch.index)
            loss = (loss + loss2) / 2
            self._pending_keys.append((key1, batch.index))
        return StepOutput(loss=loss, logs=logs)

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Enqueue this step's keys (after the loss), then move the key encoder."""
        for key, index in self._pending_keys:
            self.sampler.update(key, index)
        self._pending_keys = []
        m = self.current_momentum(step, total_steps)
        momentum_update(self.key_encoder, self.encoder, m)
        momentum_update(self.key_projector, self.projector, m)

    def current_momentum(self, step: int, total_steps: int) -> float:
        if self.momentum_schedule == "cosine":
            return cosine_momentum(self.base_momentum, step, total_steps)
        return self.base_momentum

    def embed(self, x: Tensor) -> Tensor:
        return self.encoder(x).global_

    def parameter_groups(self) -> list[dict]:
        trainable = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("key_")]
        return [{"params": trainable}]
