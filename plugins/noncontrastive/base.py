"""What the two-view bundles share: an encoder, a projector and the representation to evaluate;
and, for SimCLR, BYOL and SimSiam, multi-crop views (global crops first, then local crops)."""

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


def view_pairs(global_views: int, num_views: int) -> list[tuple[int, int]]:
    """The ordered pairs (target view i, other view j) that multi-crop compares: i one of the
    first ``global_views`` views (the global crops), j any other of the ``num_views`` views;
    i-major order. Two views: ``[(0, 1), (1, 0)]``; 2 global + 2 local: 6 pairs."""
    return [(i, j) for i in range(global_views) for j in range(num_views) if j != i]


class MultiCropObjective(TwoViewObjective):
    """Base of bundles that take multi-crop views (SwAV, DINO): ``batch.views`` holds
    ``global_views`` crops at the image size, then ``local_views`` smaller crops (from
    ``data.augment: {name: multi_crop, global_crops: global_views}``).

    The targets come from the global views only; every other view is compared with them:
    the pairs of :func:`view_pairs`. The defaults (2 global, 0 local) are the two-view bundle.
    The trainer asks the transform for ``num_views = global_views + local_views`` views.
    """

    def __init__(self, encoder: Encoder, global_views: int = 2, local_views: int = 0) -> None:
        super().__init__(encoder)
        if global_views < 1 or local_views < 0 or global_views + local_views < 2:
            raise ValueError(f"global_views must be >= 1 and local_views >= 0, with at least 2 views in all; got "
                             f"global_views {global_views} and local_views {local_views}")
        self.global_views = int(global_views)
        self.local_views = int(local_views)
        self.num_views = self.global_views + self.local_views  # what the trainer asks the transform for
        self.pairs = view_pairs(self.global_views, self.num_views)

    def all_views(self, batch: Batch) -> list[Tensor]:
        """The batch's ``num_views`` views: global ``[N, C, H, W]`` first, then local ``[N, C, s, s]``."""
        if len(batch.views) != self.num_views:
            local = (f"data.augment: {{name: multi_crop, global_crops: {self.global_views}}} with objective."
                     f"local_views: {self.local_views}" if self.local_views else "data.augment (e.g. {name: two_view})")
            raise ValueError(f"{type(self).__name__} expects {self.num_views} views ({self.global_views} global first, "
                             f"then {self.local_views} local), got {len(batch.views)}; set {local}.")
        return list(batch.views)


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
