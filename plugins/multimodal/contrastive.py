"""Pairwise contrastive baseline: CLIP-style InfoNCE over every pair of modalities."""

from __future__ import annotations

import math
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.interfaces import Batch, Critic, Encoder, MIEstimator, Objective, StepOutput

from ..common.critics import CosineCritic
from ..common.estimators import InfoNCE
from ..common.samplers import InBatchNegatives


class PairwiseContrastive(Objective):
    """CLIP-style InfoNCE between every pair of modalities: M(M-1)/2 pairs, in-batch negatives, symmetric.

    Each modality m gets its own embedding ``z_m``: the encoder run on that modality alone
    (for the two-level transformer: its own level-one transformer, then the fusion over one
    slot), followed by a per-modality linear projection when ``projection_dim`` is set.
    For a pair (a, b) row i of ``z_a`` and row i of ``z_b`` are positives, the other rows
    of the batch negatives (critic: cosine / 0.1 by default; estimator: InfoNCE); with
    ``symmetric`` both directions count, as in CLIP. Unsupervised: labels are not used.

    ``embed(x)`` is the normalised mean of the per-modality embeddings of the modalities
    present in ``x``, so any subset of modalities can be embedded.
    """

    num_views = 0
    #: The registry-wide conformance kit feeds images; this objective needs several modalities.
    conformance_params = "needs multimodal batches, not images; tests/plugins/multimodal checks it"

    def __init__(
        self,
        encoder: Encoder,
        modality_shapes: dict[str, list[int]],
        critic: Critic | None = None,
        estimator: MIEstimator | None = None,
        projection_dim: int | None = None,
        symmetric: bool = True,
    ) -> None:
        super().__init__()
        if len(modality_shapes) < 2:
            raise ValueError(f"pairwise contrastive learning needs at least 2 modalities, got {list(modality_shapes)}")
        if projection_dim is not None and projection_dim < 1:
            raise ValueError(f"projection_dim must be positive, got {projection_dim}")
        self.encoder = encoder
        self.names = list(modality_shapes)
        if projection_dim is None:
            self.projectors = nn.ModuleDict({m: nn.Identity() for m in self.names})
        else:
            self.projectors = nn.ModuleDict({m: nn.Linear(encoder.out_dim, projection_dim) for m in self.names})
        self.critic = critic if critic is not None else CosineCritic(temperature=0.1)
        self.estimator = estimator if estimator is not None else InfoNCE()
        self.sampler = InBatchNegatives()
        self.symmetric = symmetric

    def modality_embeddings(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        """Normalised embedding ``[N, D]`` of each modality present in ``x``, each encoded alone."""
        return {
            m: F.normalize(self.projectors[m](self.encoder({m: x[m]}).global_), dim=1)
            for m in self.names if m in x
        }

    def forward(self, batch: Batch) -> StepOutput:
        if not isinstance(batch.inputs, dict):
            raise ValueError("pairwise contrastive learning needs multimodal inputs (a mapping modality -> tokens)")
        z = self.modality_embeddings(batch.inputs)
        if len(z) < 2:
            raise ValueError(f"the batch holds {len(z)} of the modalities {self.names}; at least 2 are needed")
        losses, mis, accuracies = [], [], []
        for a, b in combinations(z, 2):
            directions = [(a, b), (b, a)] if self.symmetric else [(a, b)]
            for query, key in directions:
                scores = self.sampler.score(self.critic, z[query], z[key])
                estimate = self.estimator(scores)
                losses.append(estimate.loss)
                mis.append(estimate.mi)
                with torch.no_grad():
                    accuracies.append((scores.positive[:, 0] > scores.negative.max(1).values).float().mean())
        return StepOutput(
            torch.stack(losses).mean(),
            {"mi": torch.stack(mis).mean(), "instance_acc": torch.stack(accuracies).mean(), "pairs": float(math.comb(len(z), 2))},
        )

    def embed(self, x: dict[str, Tensor]) -> Tensor:
        z = self.modality_embeddings(x)
        if not z:
            raise ValueError(f"none of the modalities {self.names} is in the input")
        return F.normalize(torch.stack(list(z.values())).mean(0), dim=1)
