"""The contrast step every contrastive bundle takes, written once.

critic -> ``sampler.score`` -> estimator gives the loss and the MI estimate of queries against
their positive keys and the sampler's negatives; the keys are kept and handed to the sampler
after the optimiser step (a queue enqueues them, a bank writes them, in-batch ignores them).
MoCo v1/v2/v3 and SimCLR use it, and so does the example plugin's bundle: it is the way to
write a contrastive bundle from parts.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from selfsup.interfaces import Critic, MIEstimator, NegativeSampler, Scores


def contrast_logs(scores: Scores, mi: Tensor) -> dict[str, Tensor]:
    """MI estimate and instance accuracy (the positive beats the hardest negative) for the logs."""
    logs = {"mi": mi.detach()}
    if scores.negative is not None:
        with torch.no_grad():
            hardest_negative = scores.negative.amax(dim=1)  # [N]; no indices, unlike max(dim)
            logs["instance_acc"] = (scores.positive[:, 0] > hardest_negative).float().mean()
    return logs


class ContrastStep:
    """Scores queries against positives and negatives, and stores this step's keys afterwards.

    The critic, estimator and sampler stay submodules of the bundle (``attach`` sets them as
    its ``critic``, ``estimator`` and ``sampler``), so checkpoints and ``.to(device)`` see
    them where they always were; this object only holds references and the pending keys.
    """

    def __init__(self, critic: Critic, estimator: MIEstimator, sampler: NegativeSampler) -> None:
        self.critic, self.estimator, self.sampler = critic, estimator, sampler
        self.pending: list[tuple[Tensor, Tensor | None]] = []

    @classmethod
    def attach(cls, bundle: nn.Module, critic: Critic, estimator: MIEstimator, sampler: NegativeSampler,
               dim: int, num_train: int) -> "ContrastStep":
        """Set the parts on ``bundle``, set the sampler up for keys of width ``dim`` over
        ``num_train`` samples, and return the step."""
        bundle.critic, bundle.estimator, bundle.sampler = critic, estimator, sampler
        sampler.setup(dim, num_train)
        return cls(critic, estimator, sampler)

    def __call__(self, query: Tensor, key: Tensor, index: Tensor | None, store: bool = True
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        """query, key ``[N, D]`` (row i of key is query i's positive), index ``[N]`` -> (loss, logs).

        store: keep ``key`` (detached) for :meth:`store_keys` after the optimiser step.
        """
        scores = self.sampler.score(self.critic, query, key, index)
        estimate = self.estimator(scores)
        if store:
            self.pending.append((key.detach(), index))
        return estimate.loss, contrast_logs(scores, estimate.mi)

    @torch.no_grad()
    def store_keys(self) -> None:
        """Hand the stored keys to the sampler, in the order they were scored, and forget them."""
        for key, index in self.pending:
            self.sampler.update(key, index)
        self.pending = []
