"""What MoCo v1/v2 and v3 share: momentum key networks, scoring keys, queue/bank and momentum updates."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed
from selfsup.interfaces import Critic, Encoder, MIEstimator, NegativeSampler, Objective
from selfsup.profiling import phase

from ..common.contrast import ContrastStep
from ..common.momentum import momentum_update


def check_split_bn(split_bn: int) -> int:
    if split_bn < 1:
        raise ValueError(f"split_bn must be >= 1 (number of batch-norm chunks), got {split_bn}")
    return int(split_bn)


def check_momentum(momentum: float) -> float:
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    return float(momentum)


@torch.no_grad()
def encode_keys(key_net: nn.Module, x: Tensor, shuffle: bool) -> Tensor:
    """Key network on ``x [N, ...]``; with ``shuffle``, MoCo's shuffle-BN around it.

    The global batch (every process's shard) is permuted with a permutation from rank 0,
    this process encodes its share of the permuted batch, and the keys are put back in
    order, so no batch-norm statistic is computed over a process's own positives.
    """
    if not shuffle:
        return key_net(x)
    shuffled, unshuffle = distributed.shuffle_batch(x)
    return distributed.unshuffle_batch(key_net(shuffled), unshuffle)


class MomentumContrast(Objective):
    """Base of the MoCo objectives: queries from ``encoder`` (+ ``projector``), keys from momentum copies.

    Subclasses build ``encoder``, ``projector``, ``key_encoder``, ``key_projector`` and
    ``contrast`` (a :class:`ContrastStep` attached with the critic, estimator and sampler, set
    up for the key width), set ``shuffle_bn`` and ``split_bn``, and implement :meth:`forward`
    and :meth:`current_momentum`. The keys the contrast step scored are handed to the sampler
    after the optimiser step, before the momentum update.
    """

    encoder: Encoder
    projector: nn.Module
    key_encoder: Encoder
    key_projector: nn.Module
    critic: Critic
    estimator: MIEstimator
    sampler: NegativeSampler
    contrast: ContrastStep
    shuffle_bn: bool = False
    split_bn: int = 1

    def _project_query(self, projected: Tensor) -> Tensor:
        """The trained branch after the projector (MoCo v3 adds its predictor here)."""
        return projected

    def _query(self, x: Tensor) -> Tensor:
        """Views ``[N, C, H, W]`` -> L2-normalised queries ``[N, E]``."""
        with phase("query_encoder"):
            return F.normalize(self._project_query(self.projector(self.encoder(x).global_)), dim=1)

    def _key_net(self, x: Tensor) -> Tensor:
        return self.key_projector(self.key_encoder(x).global_)  # [N, E]

    @torch.no_grad()
    def _key(self, x: Tensor) -> Tensor:
        """Views ``[N, C, H, W]`` -> L2-normalised momentum keys ``[N, E]`` (shuffle-BN where it applies)."""
        shuffle = self.shuffle_bn and self._batch_norm_sees_chunks()
        with phase("key_encoder"):
            return F.normalize(encode_keys(self._key_net, x, shuffle), dim=1)

    def _batch_norm_sees_chunks(self) -> bool:
        """Whether the key network's batch norm sees more than one chunk of the global batch:
        several processes, ``split_bn`` > 1, or SplitBatchNorm layers put in from outside
        (the one-process reference of the distributed conformance check)."""
        return (distributed.world_size() > 1 or self.split_bn > 1
                or distributed.batch_norm_splits(self.key_encoder) > 1
                or distributed.batch_norm_splits(self.key_projector) > 1)

    def _contrast(self, query: Tensor, key: Tensor, index: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        """Queries and their positive keys ``[N, E]`` against the sampler's negatives -> (loss, logs)."""
        with phase("critic_estimator"):
            return self.contrast(query, key, index)

    def current_momentum(self, step: int, total_steps: int) -> float:
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Store this step's keys (after the loss), then move the key networks."""
        with phase("sampler_update"):
            self.contrast.store_keys()
        m = self.current_momentum(step, total_steps)
        with phase("momentum_update"):
            momentum_update(self.key_encoder, self.encoder, m)
            momentum_update(self.key_projector, self.projector, m)

    def embed(self, x: Tensor) -> Tensor:
        return self.encoder(x).global_

    def parameter_groups(self) -> list[dict]:
        trainable = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("key_")]
        return [{"params": trainable}]
