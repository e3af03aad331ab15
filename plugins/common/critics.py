"""Critics: similarity measures between representations.

Every critic maps query ``[N, D]`` and keys ``[M, D]`` to scores ``[N, M]`` (``forward``) and
aligned pairs ``[N, D] x [N, D]`` to ``[N]`` (``pair``, the diagonal of ``forward``).
Contrastive bundles score against negatives with ``forward``; BYOL and SimSiam compare a
prediction with its target through ``pair`` (their ``similarity`` parameter). Each
docstring gives the formula, the range, and the *collapse value*: what the score is when
every embedding is the same vector (for a positive pair of identical vectors).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.interfaces import Critic


@torch.no_grad()
def check_scores_width(critic: Critic, width: int, what: str = "vectors") -> Critic:
    """Raise a ValueError naming ``width`` when ``critic`` cannot score ``[N, width]`` vectors
    (a learned critic built for another width); return the critic. Bundles call it when they
    are built, so the mistake is a config error, not a shape error inside the first step."""
    probe = torch.zeros(2, width)
    was_training = critic.training
    critic.eval()  # no batch-norm statistics updated by the probe
    try:
        critic(probe, probe)
    except RuntimeError as exc:
        raise ValueError(f"the similarity {type(critic).__name__} cannot score {what} of width {width} "
                         f"({str(exc).splitlines()[0]}); build it for width {width}") from None
    finally:
        critic.train(was_training)
    return critic


def _check_temperature(temperature: float) -> float:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return float(temperature)


class DotCritic(Critic):
    """Dot product divided by a temperature: ``q . k / T`` (MoCo's critic on normalised keys).

    Range: all reals (``[-1/T, 1/T]`` on unit vectors). Collapse value: ``|z|^2 / T``, which
    grows without bound as the embeddings grow: as a similarity it rewards large norms.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        return (query / self.temperature) @ keys.T  # scale [N, D] before, not [N, M] after

    def pair(self, query: Tensor, key: Tensor) -> Tensor:
        return (query * key).sum(-1) / self.temperature  # [N]


class CosineCritic(Critic):
    """Cosine similarity divided by a temperature: ``cos(q, k) / T`` (SimCLR's critic).

    Range ``[-1/T, 1/T]``; collapse value ``1/T`` (the maximum). The default T = 0.1 suits
    contrastive losses; as BYOL's / SimSiam's similarity the bundles use T = 1 (their papers'
    ``2 - 2 cos`` and ``-cos``). ``1/T`` is computed in the features' dtype.
    learnable: learn ``log(1/T)`` as in CLIP, starting from ``temperature``.
    """

    def __init__(self, temperature: float = 0.1, learnable: bool = False) -> None:
        super().__init__()
        log_inv_t = -math.log(_check_temperature(temperature))
        if learnable:
            self.log_inv_temperature = nn.Parameter(torch.tensor(log_inv_t))
        else:  # float64: 1/T is then exact in the features' dtype, float64 included
            self.register_buffer("log_inv_temperature", torch.tensor(log_inv_t, dtype=torch.float64), persistent=False)

    def _inverse_temperature(self, like: Tensor) -> Tensor:
        return self.log_inv_temperature.to(like.dtype).exp()

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        scores = F.normalize(query, dim=-1) @ F.normalize(keys, dim=-1).T  # [N, M]
        return scores * self._inverse_temperature(scores)

    def pair(self, query: Tensor, key: Tensor) -> Tensor:
        cosine = F.cosine_similarity(query, key, dim=-1)  # [N]
        return cosine * self._inverse_temperature(cosine)


class BilinearCritic(Critic):
    """Bilinear form ``q^T W k`` with a learned ``W [D, D]`` (initialised to the identity).

    Range: all reals. Collapse value ``z^T W z``, unbounded: learned, it can be pushed up by
    growing ``W`` (state in checkpoints).
    """

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


class NegSquaredEuclideanCritic(Critic):
    """Negative squared Euclidean distance on the raw vectors: ``-|q - k|^2 / T``.

    The unnormalised MSE of the BYOL ablations. Range ``(-inf, 0]``; collapse value 0, the
    maximum: any constant embedding is a perfect pair.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        # |q|^2 - 2 q.k + |k|^2 for all pairs: [N, 1] + [N, M] + [1, M]
        squared = query.pow(2).sum(-1, keepdim=True) - 2.0 * query @ keys.T + keys.pow(2).sum(-1)
        return -squared.clamp_min(0.0) / self.temperature

    def pair(self, query: Tensor, key: Tensor) -> Tensor:
        return -(query - key).pow(2).sum(-1) / self.temperature  # [N]


def _inside_unit_interval(cosine: Tensor) -> Tensor:
    """Cosines kept inside (-1, 1): arccos's gradient is infinite at +-1."""
    eps = 1e-6 if cosine.dtype == torch.float32 else 1e-12
    return cosine.clamp(-1.0 + eps, 1.0 - eps)


def _safe_cosine(query: Tensor, key: Tensor) -> Tensor:
    """Cosines of aligned pairs ``[N, D] x [N, D] -> [N]`` in float32 or wider, inside (-1, 1)."""
    dtype = torch.promote_types(query.dtype, torch.float32)
    return _inside_unit_interval(F.cosine_similarity(query.to(dtype), key.to(dtype), dim=-1))


def _safe_cosine_matrix(query: Tensor, keys: Tensor) -> Tensor:
    """All cosines ``[N, D] x [M, D] -> [N, M]`` in float32 or wider, inside (-1, 1), by one
    matrix product of the normalised rows (memory O(N M), not O(N M D))."""
    dtype = torch.promote_types(query.dtype, torch.float32)
    with torch.autocast(query.device.type, enabled=False):
        cosine = F.normalize(query.to(dtype), dim=-1) @ F.normalize(keys.to(dtype), dim=-1).T
    return _inside_unit_interval(cosine)


class AngularCritic(Critic):
    """Negative geodesic distance on the unit sphere: ``-arccos(cos(q, k)) / T``.

    Range ``[-pi/T, 0]``; collapse value 0 (the maximum). Computed in float32 (float64 for
    float64 inputs) even under fp16/bf16 autocast, with the cosine kept inside (-1, 1), so
    identical and antipodal vectors have finite gradients.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        return -torch.arccos(_safe_cosine_matrix(query, keys)) / self.temperature  # [N, M]

    def pair(self, query: Tensor, key: Tensor) -> Tensor:
        return -torch.arccos(_safe_cosine(query, key)) / self.temperature  # [N]


class RBFCritic(Critic):
    """Gaussian kernel of the Euclidean distance: ``exp(-|q - k|^2 / (2 sigma^2))``.

    bandwidth: sigma. Range ``(0, 1]``; collapse value 1 (the maximum). Bounded, so far
    pairs stop pulling: a distance that saturates.
    """

    def __init__(self, bandwidth: float = 1.0) -> None:
        super().__init__()
        if not bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
        self.bandwidth = float(bandwidth)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        squared = query.pow(2).sum(-1, keepdim=True) - 2.0 * query @ keys.T + keys.pow(2).sum(-1)  # [N, M]
        return torch.exp(-squared.clamp_min(0.0) / (2.0 * self.bandwidth**2))

    def pair(self, query: Tensor, key: Tensor) -> Tensor:
        return torch.exp(-(query - key).pow(2).sum(-1) / (2.0 * self.bandwidth**2))  # [N]
