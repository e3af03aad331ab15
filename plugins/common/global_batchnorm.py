"""GlobalBatchNorm: batch-norm statistics over the global batch of every process (``sync_bn``).

Under torch.distributed each process normalises with the mean and variance of the whole
global batch, not of its own shard, and gradients flow back through the statistics to every
process's rows. In one process (or in eval mode) it is exactly ``nn.BatchNorm1d/2d``; the
state dict has the same keys.

* On CUDA it runs ``nn.SyncBatchNorm``'s forward (torch's fused kernels) on its own
  parameters and buffers.
* Elsewhere (gloo on CPU, where ``nn.SyncBatchNorm`` raises, and which DDP refuses to wrap
  with a SyncBatchNorm inside) the statistics are two sums over processes with
  torch.distributed's differentiable ``all_reduce``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from selfsup import distributed


class GlobalBatchNorm(_BatchNorm):
    """Batch norm over the global batch; inputs ``[n, C]`` or ``[n, C, *]`` (n rows per process).

    num_features: C. Other arguments as ``nn.BatchNorm1d``. It is not a ``BatchNorm1d``
    subclass on purpose: :func:`selfsup.distributed.convert_split_batchnorm` leaves it alone,
    since in one process its statistics already are those of the whole batch.
    """

    #: read by ``nn.SyncBatchNorm.forward`` on CUDA (None: the default process group)
    process_group = None
    _check_non_zero_input_channels = nn.SyncBatchNorm._check_non_zero_input_channels

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input of at least 2 dimensions [N, C, ...], got {input.dim()}")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not self.training or distributed.world_size() == 1:
            return super().forward(input)  # nn.BatchNorm's own computation
        if input.device.type == "cuda":
            return nn.SyncBatchNorm.forward(self, input)  # type: ignore[arg-type]
        return self._all_reduce_forward(input)

    def _all_reduce_forward(self, input: Tensor) -> Tensor:
        """Training-mode batch norm with statistics summed over processes (any backend), in at
        least float32; the output has the input's dtype."""
        from torch.distributed.nn.functional import all_reduce  # differentiable: gradients summed over ranks

        dtype = input.dtype
        if dtype not in (torch.float32, torch.float64):
            input = input.float()
        dims = [d for d in range(input.dim()) if d != 1]  # every dimension but the channels C
        shape = [1, -1] + [1] * (input.dim() - 2)  # per-channel values broadcast over [n, C, *]
        local_count = input.new_tensor([input.numel() // max(input.shape[1], 1)])
        totals = all_reduce(torch.cat([input.sum(dims), local_count]))  # [C + 1]: sums, values per channel
        count = int(totals[-1].item())  # over every process's rows
        mean = totals[:-1] / count  # [C]
        centred = input - mean.view(shape)
        variance = all_reduce(centred.square().sum(dims)) / count  # [C], biased (used to normalise)
        out = centred * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), variance.detach(), count)
        return out.to(dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, variance: Tensor, count: int) -> None:
        """As ``nn.BatchNorm``: momentum (or a cumulative average when None), unbiased variance."""
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = variance * (count / max(count - 1, 1))
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)


def batch_norm_layer(num_features: int, sync: bool, affine: bool = True) -> nn.Module:
    """``nn.BatchNorm1d`` over this process's rows, or with ``sync`` a :class:`GlobalBatchNorm`."""
    return GlobalBatchNorm(num_features, affine=affine) if sync else nn.BatchNorm1d(num_features, affine=affine)
