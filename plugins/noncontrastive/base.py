"""What the two-view bundles share: an encoder, a projector and the representation to evaluate."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from selfsup.interfaces import Batch, Encoder, Objective



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

    loss: the scalar; cosine: the mean cosine of predictions and their targets (detached).
    """

    loss: Tensor
    cosine: Tensor
