"""SplitBatchNorm: batch-norm statistics over S chunks of the batch, as S GPUs would compute them.

MoCo's CIFAR demo uses it to emulate multi-GPU batch norm (and shuffle-BN) on one device:
in training, chunk s = samples ``[s*N/S, (s+1)*N/S)`` is normalised with its own mean and
variance, exactly as if each chunk ran through its own ``BatchNorm`` on its own process;
the running statistics are the mean of the S chunks' running statistics. In eval mode it is
a plain batch norm with the running statistics. The state dict matches ``nn.BatchNorm*d``'s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


class SplitBatchNorm(_BatchNorm):
    """Batch norm with per-chunk statistics; inputs ``[N, C]`` or ``[N, C, *]``, N divisible by S.

    num_features: C. num_splits: S (1 is a plain batch norm). Other arguments as ``nn.BatchNorm2d``.
    """

    def __init__(
        self,
        num_features: int,
        num_splits: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        if num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {num_splits}")
        self.num_splits = int(num_splits)

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input of at least 2 dimensions [N, C, ...], got {input.dim()}")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not self.training or self.num_splits == 1:
            return super().forward(input)
        s, n, c = self.num_splits, input.shape[0], input.shape[1]
        if n % s:
            raise ValueError(f"SplitBatchNorm: a batch of {n} does not split into {s} equal chunks")
        # [N, C, *] -> [S, N/S, C, *] -> [N/S, S*C, *]: chunk s becomes channels s*C .. s*C + C - 1
        grouped = input.unflatten(0, (s, n // s)).transpose(0, 1).flatten(1, 2)
        momentum = 0.0 if self.momentum is None else self.momentum
        running_mean = running_var = None
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm
                momentum = 1.0 / float(self.num_batches_tracked)
            running_mean, running_var = self.running_mean.repeat(s), self.running_var.repeat(s)
        out = F.batch_norm(
            grouped,
            running_mean,
            running_var,
            self.weight.repeat(s) if self.affine else None,
            self.bias.repeat(s) if self.affine else None,
            True,
            momentum,
            self.eps,
        )
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.copy_(running_mean.view(s, c).mean(0))
                self.running_var.copy_(running_var.view(s, c).mean(0))
        return out.unflatten(1, (s, c)).transpose(0, 1).flatten(0, 1)  # back to [N, C, *]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_splits={self.num_splits}"


def convert_split_batchnorm(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every ``nn.BatchNorm1d/2d/3d`` in ``module`` by a :class:`SplitBatchNorm`.

    Weights and running statistics are kept (same state-dict keys). Returns the module
    (a new one when ``module`` itself is a batch norm). ``num_splits=1`` changes nothing.
    """
    if num_splits < 1:
        raise ValueError(f"num_splits must be >= 1, got {num_splits}")
    if num_splits == 1:
        return module
    if isinstance(module, _BatchNorm) and not isinstance(module, (SplitBatchNorm, nn.SyncBatchNorm)):
        split = SplitBatchNorm(
            module.num_features, num_splits, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        split.load_state_dict(module.state_dict())
        split.train(module.training)
        return split.to(next(iter(module.state_dict().values()), torch.empty(0)).device)
    for name, child in module.named_children():
        setattr(module, name, convert_split_batchnorm(child, num_splits))
    return module
