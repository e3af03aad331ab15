"""torch.distributed for the engine and for parts that must see every process's batch.

Launch with ``torchrun`` (``python -m torch.distributed.run``): it sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, and
:func:`init_from_env` joins the process group they describe (NCCL on CUDA, gloo on CPU).

Conventions (every function here also works in a single process, world size W = 1, where
gathers return their input and shuffles draw a local permutation):

* the global batch of ``data.batch_size`` samples is split into W equal contiguous shards,
  shard r on rank r; so ``gather`` of per-rank ``[n, ...]`` tensors in rank order is the
  global batch ``[W*n, ...]`` in the order a single process would see it;
* collectives are called by every rank in the same order (all parts are symmetric).

:class:`SplitBatchNorm` emulates in one process what W processes' batch norms compute (each
over its own shard): the single-process reference of every distributed equivalence check.
"""

from __future__ import annotations

import atexit
import datetime
import inspect
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .errors import ConfigError
from .interfaces import StepOutput


@dataclass(frozen=True)
class ProcessInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


# --------------------------------------------------------------------------- state
def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group (0 when not distributed)."""
    return dist.get_rank() if is_initialized() else 0


def is_main_process() -> bool:
    return rank() == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: torch.device, timeout_minutes: float = 30.0) -> tuple[ProcessInfo, torch.device]:
    """Join the process group torchrun describes, if any; return this process's info and device.

    device: the device the trainer chose. Under CUDA without an index it becomes
        ``cuda:LOCAL_RANK`` (and is made current); NCCL is used on CUDA, gloo otherwise.
    A process group that is already initialised (by a user's script) is reused as is.
    Without ``WORLD_SIZE > 1`` and no group, nothing happens: ``ProcessInfo()`` and ``device``.
    """
    if not is_initialized() and env_world_size() <= 1:
        return ProcessInfo(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not is_initialized():
        for key in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
            if key not in os.environ:
                raise ConfigError(
                    f"WORLD_SIZE={env_world_size()} is set but {key} is not; launch distributed runs with "
                    "torchrun (for example: torchrun --nproc_per_node 2 -m selfsup.cli train PIPELINE)."
                )
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
        atexit.register(_destroy_process_group)  # we joined it, we leave it
    return ProcessInfo(rank(), world_size(), local_rank), device


def _destroy_process_group() -> None:
    if is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------- gathers
def gather(x: Tensor) -> Tensor:
    """Every rank's ``x [n, ...]`` concatenated in rank order -> ``[W*n, ...]``, no gradient.

    Every rank must pass the same shape. Used for keys before enqueueing and for
    memory-bank updates, so that every process applies the same update.
    """
    if world_size() == 1:
        return x
    x = x.detach().contiguous()
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the gradients of every rank's loss into the local part."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        n, r = ctx.rows, dist.get_rank()
        if dist.get_backend() == "nccl":
            local = torch.empty((n, *grad.shape[1:]), dtype=grad.dtype, device=grad.device)
            dist.reduce_scatter_tensor(local, grad)
            return local
        dist.all_reduce(grad)  # gloo has no reduce_scatter: sum everything, keep our slice
        return grad[r * n : (r + 1) * n]


def gather_with_grad(x: Tensor) -> Tensor:
    """Like :func:`gather`, but differentiable: ``[n, ...] -> [W*n, ...]``.

    The backward pass gives rank r the sum over ranks of d(loss_s)/d(x_r). With DDP averaging
    parameter gradients over ranks, the result is the gradient of the mean of the per-rank
    losses, exactly what one process would compute on the concatenated batch.
    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def local_slice(total_rows: int) -> slice:
    """Rows of this rank in a gathered ``[total_rows, ...]`` tensor (equal shards)."""
    w = world_size()
    if total_rows % w:
        raise ValueError(f"{total_rows} gathered rows do not split into {w} equal shards")
    n = total_rows // w
    return slice(rank() * n, (rank() + 1) * n)


# --------------------------------------------------------------------------- shuffle-BN
@torch.no_grad()
def shuffle_batch(x: Tensor) -> tuple[Tensor, Tensor]:
    """MoCo's shuffle-BN: this rank's share of a random permutation of the global batch.

    x: ``[n, ...]`` this rank's shard. Returns ``(x_shuffled [n, ...], unshuffle [W*n])``:
    the permutation is drawn on rank 0 from the default torch generator of ``x``'s device
    (checkpointed with the run's RNG state) and broadcast, so every rank uses the same one.
    Batch-norm statistics of an encoder run on ``x_shuffled`` then mix samples of every
    rank, which stops the key encoder from leaking which samples share a shard.
    """
    x_all = gather(x)
    total = x_all.shape[0]
    if world_size() == 1:
        permutation = torch.randperm(total, device=x.device)
    else:
        permutation = torch.randperm(total, device=x.device) if is_main_process() else torch.empty(
            total, dtype=torch.long, device=x.device
        )
        dist.broadcast(permutation, src=0)
    unshuffle = torch.argsort(permutation)
    return x_all.index_select(0, permutation[local_slice(total)]), unshuffle


@torch.no_grad()
def unshuffle_batch(y: Tensor, unshuffle: Tensor) -> Tensor:
    """Undo :func:`shuffle_batch`: ``y [n, ...]`` computed on the shuffled shard -> this rank's
    rows in the original order ``[n, ...]``."""
    y_all = gather(y)
    return y_all.index_select(0, unshuffle[local_slice(y_all.shape[0])])


# --------------------------------------------------------------------------- small collectives
def any_rank(flags: list[bool], device: torch.device) -> list[bool]:
    """Element-wise OR of boolean flags over ranks (one small all_reduce)."""
    if world_size() == 1:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def from_main(values: list[float], device: torch.device) -> list[float]:
    """Rank 0's ``values`` on every rank (one small broadcast): decisions taken from rank 0's
    clock, such as a spent time budget, that every rank must follow at the same step."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.tolist()


def log_mean_exp(x: Tensor) -> Tensor:
    """``log(mean(exp(x)))`` over every element of ``x`` on every process -> scalar, differentiable.

    The partition term of Donsker-Varadhan-type bounds over the global batch: the sum of
    ``exp`` and the element count are summed over ranks (shifted by the global maximum, so
    nothing overflows); gradients flow back to every rank's elements. Every rank must call it.
    """
    x = x.reshape(-1)
    if world_size() == 1:
        return torch.logsumexp(x, 0) - math.log(x.numel())
    from torch.distributed.nn.functional import all_reduce  # differentiable: gradients summed over ranks

    shift = x.detach().max()
    dist.all_reduce(shift, op=dist.ReduceOp.MAX)
    totals = all_reduce(torch.stack([(x - shift).exp().sum(), x.new_tensor(float(x.numel()))]))
    return shift + totals[0].log() - totals[1].log()


def mean_over_ranks(values: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """The mean of each scalar over ranks (keys must be the same on every rank)."""
    if world_size() == 1 or not values:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().to(device=device, dtype=torch.float32).reshape(()) for k in keys])
    dist.all_reduce(stacked)
    stacked /= world_size()
    return dict(zip(keys, stacked.unbind(0)))


def broadcast_from_main(x: Tensor) -> Tensor:
    """Rank 0's ``x`` on every rank (same shape and dtype everywhere), no gradient.

    For random draws every rank must share (a discriminator's prior samples): rank 0's draw
    from its default generator is the one a single process seeded alike would make.
    """
    if world_size() == 1:
        return x
    x = x.detach().contiguous()
    dist.broadcast(x, src=0)
    return x


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


# --------------------------------------------------------------------------- models
@torch.no_grad()
def broadcast_module_state(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (once, before training)."""
    if world_size() == 1:
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


class _UnpackedOutput(nn.Module):
    """The objective with its ``StepOutput`` unpacked to ``(loss, logs)``.

    DDP looks for the output tensors it hooks (for ``static_graph``'s first-step reduction)
    in tuples and dicts, not inside dataclasses.
    """

    def __init__(self, objective: nn.Module) -> None:
        super().__init__()
        self.objective = objective

    def forward(self, batch: Any) -> tuple[Tensor, dict[str, Any]]:
        out = self.objective(batch)
        return out.loss, out.logs


class DistributedObjective(nn.Module):
    """DistributedDataParallel around an objective that synchronises only ``trainable``.

    Call it like the objective: ``batch -> StepOutput``; the loss it returns is DDP's, so
    its backward pass averages the gradients over ranks.

    * Parameters outside ``trainable`` (momentum/key encoders, a discriminator with its own
      optimiser) are ignored by DDP: no gradient hooks, no all-reduce.
    * Buffers are not broadcast at each step: queue and memory bank stay identical because
      their updates are gathered; BN running statistics stay per rank (rank 0's are the
      ones checkpointed, as with DDP's default broadcast from rank 0). One broadcast of the
      whole state at wrap time makes every rank start from rank 0's model.
    * ``static_graph=True``: the objective's graph is the same every step, so parameters it
      does not use are found once, at the first step, with no per-step graph search
      (``find_unused_parameters`` would redo it every step).
    """

    def __init__(self, objective: nn.Module, trainable: list[nn.Parameter], device: torch.device) -> None:
        super().__init__()
        broadcast_module_state(objective)
        unpacked = _UnpackedOutput(objective)
        trainable_ids = {id(p) for p in trainable}
        ignored = [name for name, p in unpacked.named_parameters() if id(p) not in trainable_ids]
        ddp = nn.parallel.DistributedDataParallel
        ddp._set_params_and_buffers_to_ignore_for_model(unpacked, ignored)
        options: dict[str, Any] = {"static_graph": True}
        if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters:  # torch >= 2.12
            options.update(forward_sync_buffers=False, init_sync=False)
        else:
            options["broadcast_buffers"] = False
        self.ddp = ddp(unpacked, device_ids=[device.index] if device.type == "cuda" else None, **options)

    def forward(self, batch: Any) -> StepOutput:
        loss, logs = self.ddp(batch)
        return StepOutput(loss=loss, logs=logs)


# --------------------------------------------------------------------------- batch norm, one process
class SplitBatchNorm(_BatchNorm):
    """Batch norm with per-chunk statistics, as S processes would compute them; inputs ``[N, C]``
    or ``[N, C, *]``, N divisible by S.

    In training, chunk s = samples ``[s*N/S, (s+1)*N/S)`` is normalised with its own mean and
    variance, exactly as if each chunk ran through its own ``BatchNorm`` on its own process;
    the running statistics are the mean of the S chunks' running statistics. In eval mode it
    is a plain batch norm with the running statistics. The state dict matches
    ``nn.BatchNorm*d``'s. MoCo's CIFAR demo uses it to emulate multi-GPU batch norm (and
    shuffle-BN) on one device; the distributed conformance check uses it for its reference.

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
    Other batch norms are left as they are: a :class:`SplitBatchNorm` already, and those
    with global statistics (``nn.SyncBatchNorm``, or any other ``_BatchNorm`` that is not a
    ``BatchNorm1d/2d/3d``), which in one process are a batch norm over the whole batch.
    """
    if num_splits < 1:
        raise ValueError(f"num_splits must be >= 1, got {num_splits}")
    if num_splits == 1:
        return module
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        split = SplitBatchNorm(
            module.num_features, num_splits, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        split.load_state_dict(module.state_dict())
        for name, parameter in split.named_parameters():  # a frozen (momentum) copy stays frozen
            parameter.requires_grad_(getattr(module, name).requires_grad)
        split.train(module.training)
        return split.to(next(iter(module.state_dict().values()), torch.empty(0)).device)
    for name, child in module.named_children():
        setattr(module, name, convert_split_batchnorm(child, num_splits))
    return module


def batch_norm_splits(module: nn.Module) -> int:
    """The most chunks any :class:`SplitBatchNorm` in ``module`` splits its batch into (1 if none)."""
    return max((m.num_splits for m in module.modules() if isinstance(m, SplitBatchNorm)), default=1)
