"""Projection and prediction heads (MLPs) shared by bundles."""

from __future__ import annotations

from torch import nn


def mlp_head(
    in_dim: int,
    out_dim: int,
    hidden_dim: int | None = None,
    num_layers: int = 2,
    batch_norm: bool = False,
    last_batch_norm: bool = False,
) -> nn.Sequential:
    """An MLP ``[N, in_dim] -> [N, out_dim]``.

    num_layers=1 is a linear layer; each hidden layer is Linear(-BN)-ReLU (MoCo v2 uses
    2 layers without BN; MoCo v3 / BYOL use BN; ``last_batch_norm`` adds an affine-free BN
    on the output as in MoCo v3 and SimSiam).
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    hidden_dim = hidden_dim or in_dim
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(width, hidden_dim, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        width = hidden_dim
    layers.append(nn.Linear(width, out_dim, bias=not last_batch_norm))
    if last_batch_norm:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)
