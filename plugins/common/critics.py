"""Critics: similarity measures between representations.

Every critic maps query ``[N, D]`` and keys ``[M, D]`` to scores ``[N, M]`` (``forward``) and
aligned pairs ``[N, D] x [N, D]`` to ``[N]`` (``pair``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.interfaces import Critic


def _check_temperature(temperature: float) -> float:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return float(temperature)


class DotCritic(Critic):
    """Dot product divided by a temperature: ``q . k / T`` (MoCo's critic on normalised keys)."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        return (query / self.temperature) @ keys.T  # scale [N, D] before, not [N, M] after

    def pair(self, query: Tensor, key: Tensor) -> Tensor:
        return (query * key).sum(-1) / self.temperature  # [N]


class CosineCritic(Critic):
    """Cosine similarity divided by a temperature: ``cos(q, k) / T`` (SimCLR's critic).

    learnable: learn ``log(1/T)`` as in CLIP, starting from ``temperature``.
    """

    def __init__(self, temperature: float = 0.1, learnable: bool = False) -> None:
        super().__init__()
        log_inv_t = torch.tensor(-torch.log(torch.tensor(_check_temperature(temperature))).item())
        if learnable:
            self.log_inv_temperature = nn.Parameter(log_inv_t)
        else:
            self.register_buffer("log_inv_temperature", log_inv_t, persistent=False)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        return F.normalize(query, dim=-1) @ F.normalize(keys, dim=-1).T * self.log_inv_temperature.exp()

    def pair(self, query: Tensor, key: Tensor) -> Tensor:
        return F.cosine_similarity(query, key, dim=-1) * self.log_inv_temperature.exp()


class BilinearCritic(Critic):
    """Bilinear form ``q^T W k`` with a learned ``W [D, D]`` (initialised to the identity)."""

    #: Small arguments for the conformance kit (selfsup.testing), which scores 8-d features.
    conformance_params = {"dim": 8}

    def __init__(self, dim: int, key_dim: int | None = None) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        key_dim = key_dim or dim
        self.weight = nn.Parameter(torch.eye(dim, key_dim))

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        return query @ self.weight @ keys.T  # [N, D] [D, D'] [D', M] -> [N, M]

    def pair(self, query: Tensor, key: Tensor) -> Tensor:
        return ((query @ self.weight) * key).sum(-1)
