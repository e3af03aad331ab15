"""A bundle built from existing selfsup parts plus this package's SMILE estimator."""

from __future__ import annotations

import torch
from torch import Tensor

from selfsup.interfaces import Batch, Critic, Encoder, MIEstimator, NegativeSampler, Objective, StepOutput
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
        self.critic = critic if critic is not None else CosineCritic(temperature=0.1)
        self.estimator = estimator if estimator is not None else SMILE(clip=5.0, gradient="dv")
        self.sampler = sampler if sampler is not None else InBatchNegatives(both_views=True)
        self.sampler.setup(embedding_dim, num_train)
        self.symmetric = symmetric
        self._pending_keys: list[tuple[Tensor, Tensor | None]] = []

    def _project(self, x: Tensor) -> Tensor:
        return self.projector(self.encoder(x).global_)  # [N, E]

    def _contrast(self, query: Tensor, key: Tensor, index: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        scores = self.sampler.score(self.critic, query, key, index)
        estimate = self.estimator(scores)
        accuracy = None
        if scores.negative is not None:
            with torch.no_grad():  # positive beats every negative: the instance was recognised
                accuracy = (scores.positive[:, 0] > scores.negative.max(dim=1).values).float().mean()
        return estimate.loss, estimate.mi, accuracy

    def forward(self, batch: Batch) -> StepOutput:
        """Batch with 2 views ``[N, C, H, W]`` -> loss and logs (mi, instance_acc)."""
        if len(batch.views) < 2:
            raise ValueError(f"SmileContrast needs 2 augmented views per batch, got {len(batch.views)}")
        z1, z2 = self._project(batch.views[0]), self._project(batch.views[1])
        loss, mi, accuracy = self._contrast(z1, z2, batch.index)
        self._pending_keys = [(z2.detach(), batch.index)]
        if self.symmetric:
            loss2, mi2, _ = self._contrast(z2, z1, batch.index)
            loss, mi = (loss + loss2) / 2, (mi + mi2) / 2
            self._pending_keys.append((z1.detach(), batch.index))
        logs: dict[str, Tensor | float] = {"mi": mi}
        if accuracy is not None:
            logs["instance_acc"] = accuracy
        return StepOutput(loss=loss, logs=logs)

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Hand this step's keys to the sampler (a queue or bank stores them; in-batch ignores them)."""
        for key, index in self._pending_keys:
            self.sampler.update(key, index)
        self._pending_keys = []

    def embed(self, x: Tensor) -> Tensor:
        """Images ``[N, C, H, W]`` -> the encoder's global features ``[N, D]`` (before the head)."""
        return self.encoder(x).global_
