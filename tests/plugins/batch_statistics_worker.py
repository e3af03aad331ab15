"""Run on 2 gloo processes by test_distributed_batch_statistics.py (selfsup.testing.run_on_gloo).

Every rank builds the same global tensors from fixed seeds, keeps its contiguous shard of 4
rows, runs the part under test on it and returns what it saw; the test compares each rank
with the rows a single process computes on the whole batch of 8.
"""

from __future__ import annotations

import torch

from selfsup import distributed
from selfsup.plugins.common.critics import DotCritic
from selfsup.plugins.common.global_batchnorm import GlobalBatchNorm
from selfsup.plugins.dim.critics import ConcatCritic, SeparableCritic, score_global_batch, score_local_map

ROWS = 4  # rows per rank
SHAPES = {"2d": (2 * ROWS, 3), "4d": (2 * ROWS, 3, 2, 2)}  # BN inputs [N, C] and [N, C, H, W]
WEIGHT, BIAS = torch.tensor([0.5, 1.0, 2.0]), torch.tensor([0.0, 1.0, -1.0])


def batch_norm_inputs(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The global input and a random read-out (the loss is ``sum(y * readout)``)."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=g) * 2 + 1, torch.randn(shape, generator=g)


def dim_inputs() -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.nn.Module]]:
    """Global codes ``[8, 4]``, local maps ``[8, 4, 2, 2]`` and the critics (same weights on every rank)."""
    g = torch.Generator().manual_seed(1)
    code, local = torch.randn(2 * ROWS, 4, generator=g), torch.randn(2 * ROWS, 4, 2, 2, generator=g)
    torch.manual_seed(2)
    critics = {
        "local_dot": DotCritic(0.5),
        "local_separable": SeparableCritic(4, 4, hidden_dim=6, embedding_dim=5, batch_norm=False),
        "global_separable": SeparableCritic(4, 16, hidden_dim=6, embedding_dim=5, batch_norm=False),
        "global_concat": ConcatCritic(4, 16, hidden_dim=6),
    }
    return code, local, critics


def scenarios() -> dict:
    rows = slice(distributed.rank() * ROWS, (distributed.rank() + 1) * ROWS)
    out: dict = {}
    for name, shape in SHAPES.items():
        x_global, readout = batch_norm_inputs(shape)
        bn = GlobalBatchNorm(3)
        with torch.no_grad():
            bn.weight.copy_(WEIGHT), bn.bias.copy_(BIAS)
        x = x_global[rows].clone().requires_grad_(True)
        y = bn(x)
        (y * readout[rows]).sum().backward()
        out[name] = {"y": y.detach(), "x_grad": x.grad, "weight_grad": bn.weight.grad, "bias_grad": bn.bias.grad,
                     "running_mean": bn.running_mean.clone(), "running_var": bn.running_var.clone()}
    code, local, critics = dim_inputs()
    out["dim"] = {  # this rank's codes against the local maps (local_*) or flattened maps (global_*) of all 8
        name: score_local_map(critic, code[rows], local[rows], gather=True) if name.startswith("local")
        else score_global_batch(critic, code[rows], local[rows].flatten(1))
        for name, critic in critics.items()
    }
    return {k: v if not isinstance(v, dict) else {n: t.detach() for n, t in v.items()} for k, v in out.items()}
