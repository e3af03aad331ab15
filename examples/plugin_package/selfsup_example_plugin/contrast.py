"""A bundle built from existing selfsup parts plus this package's SMILE estimator."""

from __future__ import annotations

import torch
from torch import Tensor

from selfsup.interfaces import Batch, Critic, Encoder, MIEstimator, NegativeSampler, Objective, StepOutput
from selfsup.plugins.common.contrast import ContrastStep
from selfsup.plugins.common.critics import CosineCritic
from selfsup.plugins.common.heads import mlp_head
from selfsup.plugins.common.samplers import InBatchNegatives

from .smile import SMILE


class SmileContrast(Objective):
    """Instance discrimination scored by any critic and MI estimator, SMILE by default.

    Two augmented views of an image are a positive pair; the sampler supplies the negatives
    (default: the rest of the batch, both views). Each view goes through the encoder and an
    MLP projection head to ``[N, embedding_dim]``; the critic scores view-1 queries against
    view-2 keys (default: cosine / 0.1) and the estimator (default: SMILE with tau = 5,
    trained with the unclipped DV gradient) turns the scores into a loss and an MI estimate.
    ``symmetric`` also contrasts view 2 against view 1.
    """

    def __init__(
        self,
        encoder: Encoder,
        critic: Critic | None = None,
        estimator: MIEstimator | None = None,
        sampler: NegativeSampler | None = None,
        embedding_dim: int = 64,
        projector_hidden_dim: int | None = None,
        symmetric: bool = True,
        num_train: int = 0,
    ) -> None:
        super().__init__()
        if embedding_dim <= 0:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        self.encoder = encoder
        self.projector = mlp_head(encoder.out_dim, embedding_dim, projector_hidden_dim, num_layers=2)
        # critic -> sampler -> estimator and the keys to store: selfsup's contrast step, with
        # this package's estimator as the default
        self.contrast = ContrastStep.attach(
            self, critic if critic is not None else CosineCritic(temperature=0.1),
            estimator if estimator is not None else SMILE(clip=5.0, gradient="dv"),
            sampler if sampler is not None else InBatchNegatives(both_views=True), embedding_dim, num_train)
        self.symmetric = symmetric

    def _project(self, x: Tensor) -> Tensor:
        return self.projector(self.encoder(x).global_)  # [N, E]

    def forward(self, batch: Batch) -> StepOutput:
        """Batch with 2 views ``[N, C, H, W]`` -> loss and logs (mi, instance_acc)."""
        if len(batch.views) < 2:
            raise ValueError(f"SmileContrast needs 2 augmented views per batch, got {len(batch.views)}")
        z1, z2 = self._project(batch.views[0]), self._project(batch.views[1])
        loss, logs = self.contrast(z1, z2, batch.index)
        if self.symmetric:
            loss2, logs2 = self.contrast(z2, z1, batch.index)
            loss, logs["mi"] = (loss + loss2) / 2, (logs["mi"] + logs2["mi"]) / 2
        return StepOutput(loss=loss, logs=logs)

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Hand this step's keys to the sampler (a queue or bank stores them; in-batch ignores them)."""
        self.contrast.store_keys()

    def embed(self, x: Tensor) -> Tensor:
        """Images ``[N, C, H, W]`` -> the encoder's global features ``[N, D]`` (before the head)."""
        return self.encoder(x).global_
