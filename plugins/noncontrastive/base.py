"""What the two-view bundles share: an encoder, a projector and the representation to evaluate."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor

import torch.nn.functional as F

from selfsup.interfaces import Batch, Critic, Encoder, Objective



class TwoViewObjective(Objective):
    """Base of bundles that compare two augmented views of each image.

    ``embed(x)`` is the encoder's global vector ``[N, D]`` (before any projector), the
    representation that kNN / linear evaluation and the collapse monitor read.
    """

    num_views = 2

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def two_views(self, batch: Batch) -> tuple[Tensor, Tensor]:
        if len(batch.views) < 2:
            raise ValueError(f"{type(self).__name__} needs 2 augmented views per batch, got {len(batch.views)}; "
                             "set data.augment (e.g. {name: two_view}).")
        return batch.views[0], batch.views[1]

    def embed(self, x: Tensor) -> Tensor:
        return self.encoder(x).global_

    def project(self, x: Tensor) -> Tensor:
        """Images -> the projector's output ``[N, E]`` (what the loss compares; the collapse
        monitor reads it with ``monitor.source: project``). Subclasses set ``self.projector``."""
        return self.projector(self.encoder(x).global_)


class PredictionLoss(NamedTuple):
    """What BYOL's and SimSiam's losses return.

    The convention of every functional loss here: a NamedTuple (or, for the contrastive
    NT-Xent, the estimators' :class:`~selfsup.interfaces.Estimate`) whose ``loss`` field is
    the scalar to minimise, the other fields the terms a bundle logs (detached).

    loss: the scalar; similarity: the mean similarity of predictions and their targets
    (detached; the cosine by default).
    """

    loss: Tensor
    similarity: Tensor


Similarity = Callable[[Tensor, Tensor], Tensor]


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """The default similarity of aligned pairs ``[N, D] x [N, D] -> [N]``: the cosine."""
    return F.cosine_similarity(a, b, dim=-1)


def pair_similarity(critic: Critic) -> Similarity:
    """A critic's aligned-pair scores as a similarity (negated for a distance critic)."""
    if critic.higher_is_similar:
        return critic.pair
    return lambda a, b: -critic.pair(a, b)
