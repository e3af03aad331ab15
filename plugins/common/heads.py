"""Projection and prediction heads (MLPs) shared by bundles, and the ``mlp`` head component.

Bundles take their projector / predictor as a :class:`~selfsup.interfaces.Head` (registry
kind ``head``: ``{name: mlp, out_dim: 256}`` in a pipeline) or a ready ``nn.Module`` in
Python; :func:`build_head` turns either into the module and its output width.
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.interfaces import Head

from .global_batchnorm import batch_norm_layer


def mlp_head(
    in_dim: int,
    out_dim: int,
    hidden_dim: int | None = None,
    num_layers: int = 2,
    batch_norm: bool = False,
    last_batch_norm: bool = False,
    sync_bn: bool = False,
) -> nn.Sequential:
    """An MLP ``[N, in_dim] -> [N, out_dim]``.

    num_layers=1 is a linear layer; each hidden layer is Linear(-BN)-ReLU (MoCo v2 uses
    2 layers without BN; MoCo v3 / BYOL use BN; ``last_batch_norm`` adds an affine-free BN
    on the output as in MoCo v3 and SimSiam). ``sync_bn``: every BN is a
    :class:`~.global_batchnorm.GlobalBatchNorm` (statistics over the global batch of all
    processes; ``nn.BatchNorm1d`` in one process).
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    hidden_dim = hidden_dim or in_dim
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(width, hidden_dim, bias=not batch_norm))
        if batch_norm:
            layers.append(batch_norm_layer(hidden_dim, sync_bn))
        layers.append(nn.ReLU(inplace=True))
        width = hidden_dim
    layers.append(nn.Linear(width, out_dim, bias=not last_batch_norm))
    if last_batch_norm:
        layers.append(batch_norm_layer(out_dim, sync_bn, affine=False))
    return nn.Sequential(*layers)


class MLPHead(Head):
    """An MLP head (registry ``mlp``): ``layers`` Linear layers, each hidden one followed by
    BN (``batch_norm``) and ReLU; ``last_batch_norm`` adds an affine-free BN on the output.

    out_dim: output width; hidden_dim: hidden width (default: the input width).
    sync_bn: under torch.distributed, batch norm uses the statistics of the global batch (all
        processes' rows, as Barlow Twins' and VICReg's official code does with SyncBatchNorm)
        instead of this process's shard; no effect in one process.
    """

    conformance_params = {"out_dim": 4}

    def __init__(self, out_dim: int, hidden_dim: int | None = None, layers: int = 2, batch_norm: bool = True,
                 last_batch_norm: bool = False, sync_bn: bool = False) -> None:
        if out_dim <= 0:
            raise ValueError(f"out_dim must be positive, got {out_dim}")
        if hidden_dim is not None and hidden_dim <= 0:
            raise ValueError(f"hidden_dim must be positive, got {hidden_dim}")
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.out_dim, self.hidden_dim, self.layers = int(out_dim), hidden_dim, int(layers)
        self.batch_norm, self.last_batch_norm = bool(batch_norm), bool(last_batch_norm)
        self.sync_bn = bool(sync_bn)

    def build(self, in_dim: int) -> nn.Sequential:
        return mlp_head(in_dim, self.out_dim, self.hidden_dim, num_layers=self.layers, batch_norm=self.batch_norm,
                        last_batch_norm=self.last_batch_norm, sync_bn=self.sync_bn)


@torch.no_grad()
def output_width(module: nn.Module, in_dim: int) -> int:
    """Width D of ``module``'s output ``[N, D]`` for inputs ``[N, in_dim]`` (one dry forward in eval mode)."""
    training = module.training
    module.eval()
    try:
        parameter = next(module.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        out = module(torch.zeros(2, in_dim, device=device))
    finally:
        module.train(training)
    if out.dim() != 2:
        raise ValueError(f"a head must map [N, {in_dim}] to [N, D], got shape {tuple(out.shape)}")
    return int(out.shape[1])


def check_embedding_dim(embedding_dim: int) -> int:
    """A bundle's ``embedding_dim`` (the width of its projections) must be positive."""
    if embedding_dim <= 0:
        raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
    return int(embedding_dim)


def build_head(head: Head | nn.Module | None, in_dim: int, default: Head) -> tuple[nn.Module, int]:
    """A bundle's ``projector`` / ``predictor`` argument as (module, output width).

    head: a :class:`~selfsup.interfaces.Head` (built for ``in_dim``), a ready ``nn.Module``
    (used as it is; its width is read from a dry forward) or None (``default`` is built).
    """
    head = default if head is None else head
    if isinstance(head, Head):
        return head.build(in_dim), head.out_dim
    if isinstance(head, nn.Module):
        return head, output_width(head, in_dim)
    raise TypeError(f"a head must be a selfsup Head or an nn.Module, got {type(head).__name__}")


def check_prediction_width(predictor_width: int, embedding_dim: int) -> None:
    """A predictor must return what it predicts: vectors as wide as the projections."""
    if predictor_width != embedding_dim:
        raise ValueError(f"the predictor returns {predictor_width}-d vectors but the projections it predicts are "
                         f"{embedding_dim}-d; give it out_dim {embedding_dim}")
