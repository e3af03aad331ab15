"""The distributed equivalence check: one training step on 2 gloo processes equals 1 process.

For every objective, the global kit batch (:func:`~selfsup.testing.checks.objective_batch`)
is split into W equal contiguous shards, shard r on rank r, and each rank takes one step as
the engine does (:class:`~selfsup.distributed.DistributedObjective`: DDP averages the
gradients). The mean of the ranks' losses and the averaged parameter gradients must equal
the loss and gradients of one process on the whole batch, whose batch norms are converted to
:class:`~selfsup.distributed.SplitBatchNorm` with W splits (per-process statistics, as DDP
keeps them; global batch norms such as ``nn.SyncBatchNorm`` stay whole). An objective that
computes a batch statistic (a standardisation, a covariance, in-batch negatives) over its
own shard instead of the gathered global batch fails it.

Both sides build the objective after ``torch.manual_seed(0)`` and take the step after
``torch.manual_seed(1)``, so random draws inside ``forward`` agree when they are made on
rank 0 and broadcast (MoCo's shuffle-BN, a prior's samples). An objective that cannot follow
this declares ``distributed_conformance = "reason"`` and is skipped.

The W worker processes are spawned once for all objectives (gloo over a FileStore, one
thread each); the one-process references are computed meanwhile in the calling process.
"""

from __future__ import annotations

import datetime
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from .. import distributed
from ..interfaces import Batch
from ..registry import Registry
from .checks import objective_batch
from .conformance import ConformanceResult, ConformanceSkip, build_for_conformance, input_shape

#: Processes of the check.
WORLD_SIZE = 2
#: Losses agree to ``LOSS_TOLERANCE * (1 + |loss|)``.
LOSS_TOLERANCE = 1e-4
#: Gradients agree to ``GRAD_TOLERANCE`` times the largest reference gradient entry (plus 1e-7).
GRAD_TOLERANCE = 1e-4
#: Seconds the workers may take for all objectives together before they are stopped.
TIMEOUT_S = 600.0
PREFIX = "distributed: "


# --------------------------------------------------------------------------- processes
def _gloo_entry(rank: int, world_size: int, store: str, out_dir: str, fn: Callable[..., Any], args: tuple) -> None:
    """In a spawned worker: join the gloo group, run ``fn(*args)``, save its value to ``out_dir/rank{r}.pt``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=120))
    try:
        torch.save(fn(*args), Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()  # both results are on disk before either process tears gloo down
    finally:
        dist.destroy_process_group()
    # Leave without the interpreter's teardown: gloo's threads can abort it ("terminate called
    # without an active exception", SIGABRT) after the work is done and saved.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_on_gloo(fn: Callable[..., Any], *args: Any, world_size: int = WORLD_SIZE, timeout_s: float = TIMEOUT_S,
                meanwhile: Callable[[], Any] | None = None) -> tuple[list[Any], Any]:
    """Run ``fn(*args)`` on ``world_size`` spawned processes joined in a gloo group (CPU).

    fn and args must be picklable (``fn`` a module-level function). Returns (each rank's
    return value in rank order, what ``meanwhile()`` returned: it runs in this process while
    the workers start and work). A worker's exception is re-raised here with its traceback
    (``torch.multiprocessing.ProcessRaisedException``); workers still running after
    ``timeout_s`` are killed and TimeoutError is raised. The workers are spawned (fresh
    interpreters with this process's ``sys.path``), so a calling script needs the usual
    ``if __name__ == "__main__":`` guard.
    """
    with tempfile.TemporaryDirectory(prefix="selfsup-gloo-") as tmp:
        context = mp.start_processes(_gloo_entry, (world_size, os.path.join(tmp, "store"), tmp, fn, args),
                                     nprocs=world_size, join=False, start_method="spawn")
        deadline = time.monotonic() + timeout_s
        try:
            extra = meanwhile() if meanwhile is not None else None
            while not context.join(timeout=0.2):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the {world_size} worker processes did not finish within {timeout_s:.0f} s")
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
                    process.join()
        return [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(world_size)], extra


# --------------------------------------------------------------------------- one step, both ways
def shard(batch: Batch, rank: int, world_size: int) -> Batch:
    """Rank ``rank``'s contiguous shard of every ``[N, ...]`` tensor of ``batch`` (N divisible by W)."""
    n = batch.size
    if n % world_size:
        raise ValueError(f"a batch of {n} does not split into {world_size} equal shards")
    rows = slice(rank * n // world_size, (rank + 1) * n // world_size)

    def part(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: v[rows] for k, v in x.items()}
        return None if x is None else x[rows]

    return Batch(part(batch.inputs), [part(v) for v in batch.views], part(batch.labels), part(batch.index))


def _build(registry: Registry, name: str) -> tuple[torch.nn.Module, Batch]:
    """The objective (seeded) and the kit's global batch for it."""
    factory = registry.get("objective", name).factory
    reason = getattr(factory, "distributed_conformance", None)
    if isinstance(reason, str):
        raise ConformanceSkip(reason)
    torch.manual_seed(0)
    objective, context = build_for_conformance(registry, "objective", name)
    batch = objective_batch(objective.num_views, input_shape(context), num_classes=context["num_classes"],
                            num_train=context["num_train"])
    return objective, batch


def _trainable(objective: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for group in objective.parameter_groups() for p in group["params"]]


def _gradients(objective: torch.nn.Module, trainable: list[torch.nn.Parameter]) -> dict[str, Tensor]:
    ids = {id(p) for p in trainable}
    return {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
            for n, p in objective.named_parameters() if id(p) in ids}


def one_process_step(objective: torch.nn.Module, batch: Batch, world_size: int = WORLD_SIZE
                     ) -> tuple[float, dict[str, Tensor]]:
    """The reference: one process on the whole batch, its batch norms split in ``world_size``
    (in place) -> (loss, gradients of the trainable parameters by name)."""
    distributed.convert_split_batchnorm(objective, world_size)
    trainable = _trainable(objective)
    objective.train()
    torch.manual_seed(1)
    out = objective(batch)
    out.loss.backward()
    return float(out.loss.detach()), _gradients(objective, trainable)


def process_group_step(objective: torch.nn.Module, batch: Batch) -> tuple[float, dict[str, Tensor]]:
    """On every rank of the current process group: this rank's shard of the global ``batch``
    through DDP as the engine wraps it -> (mean loss over ranks, averaged gradients by name)."""
    trainable = _trainable(objective)
    model = distributed.DistributedObjective(objective, trainable, torch.device("cpu"))
    objective.train()
    torch.manual_seed(1)
    out = model(shard(batch, distributed.rank(), distributed.world_size()))
    out.loss.backward()
    loss = distributed.mean_over_ranks({"loss": out.loss}, torch.device("cpu"))["loss"]
    return float(loss), _gradients(objective, trainable)


def reference_step(registry: Registry, name: str, world_size: int = WORLD_SIZE) -> tuple[float, dict[str, Tensor]]:
    """:func:`one_process_step` for the registered objective ``name``, built as the kit builds it."""
    return one_process_step(*_build(registry, name), world_size=world_size)


def distributed_step(registry: Registry, name: str) -> tuple[float, dict[str, Tensor]]:
    """:func:`process_group_step` for the registered objective ``name``, built as the kit builds it."""
    return process_group_step(*_build(registry, name))


def _worker_steps(registry: Registry | None, names: list[str]) -> list[tuple[str, Any]]:
    """In each worker: :func:`distributed_step` for every name -> ("ok", result) / ("skip" | "error", text)."""
    if registry is None:  # it could not be pickled: rebuild it from the installed plugins
        from ..plugin_manager import load_registry

        registry = load_registry().registry
    outcomes: list[tuple[str, Any]] = []
    for name in names:
        try:
            outcomes.append(("ok", distributed_step(registry, name)))
        except ConformanceSkip as skip:
            outcomes.append(("skip", str(skip)))
        except Exception as exc:  # reported in the table; the next objective still runs
            outcomes.append(("error", f"{type(exc).__name__}: {exc}"))
    return outcomes


# --------------------------------------------------------------------------- comparison
def compare(reference: tuple[float, dict[str, Tensor]], got: tuple[float, dict[str, Tensor]],
            world_size: int = WORLD_SIZE) -> str | None:
    """None when loss and gradients agree, else what differs (for the table)."""
    ref_loss, ref_grads = reference
    loss, grads = got
    if not abs(loss - ref_loss) <= LOSS_TOLERANCE * (1.0 + abs(ref_loss)):
        return (f"loss {loss:.6g} on {world_size} processes but {ref_loss:.6g} on 1 with the whole batch; a batch "
                "statistic over this process's rows only (gather them with selfsup.distributed.gather_with_grad), or "
                "a random draw not taken from rank 0?")
    if grads.keys() != ref_grads.keys():
        return f"trainable parameters differ: {sorted(grads.keys() ^ ref_grads.keys())[:4]}"
    scale = max((float(g.abs().max()) for g in ref_grads.values() if g.numel()), default=0.0)
    for key, ref in ref_grads.items():
        error = float((grads[key] - ref).abs().max()) if ref.numel() else 0.0
        if not error <= GRAD_TOLERANCE * scale + 1e-7:
            return (f"the gradient of {key} differs by {error:.3g} (largest gradient entry {scale:.3g}) between "
                    f"{world_size} processes and 1 with the whole batch")
    return None


def _result(registry: Registry, name: str, status: str, detail: str) -> ConformanceResult:
    provider = str(registry.get("objective", name).provider)
    return ConformanceResult("objective", name, provider, status, PREFIX + detail)  # type: ignore[arg-type]


def run_distributed_conformance(registry: Registry, names: Iterable[str] | None = None,
                                world_size: int = WORLD_SIZE, timeout_s: float = TIMEOUT_S) -> list[ConformanceResult]:
    """The distributed check for the objectives ``names`` (default: every registered one).

    One row per objective (kind ``objective``, detail starting with ``distributed:``).
    Never raises for a failing objective; crashed or hung workers fail the rows they did
    not report.
    """
    names = list(names) if names is not None else registry.names("objective")
    if not names:
        return []
    payload: Registry | None = registry
    try:
        pickle.dumps(registry)  # what spawning the workers does with it
    except Exception:  # a factory defined inside a function: the workers load the installed plugins
        payload = None

    def references() -> dict[str, Any]:
        out: dict[str, Any] = {}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for name in names:
                with torch.random.fork_rng(devices=[]), torch.enable_grad():
                    try:
                        out[name] = ("ok", reference_step(registry, name, world_size))
                    except ConformanceSkip as skip:
                        out[name] = ("skip", str(skip))
                    except Exception as exc:
                        out[name] = ("error", f"{type(exc).__name__}: {exc}")
        finally:
            torch.set_num_threads(threads)
        return out

    try:
        ranks, expected = run_on_gloo(_worker_steps, payload, names, world_size=world_size, timeout_s=timeout_s,
                                      meanwhile=references)
    except Exception as exc:
        why = " ".join(str(exc).split())[-300:]
        return [_result(registry, n, "fail", f"the {world_size} worker processes failed: {type(exc).__name__}: "
                        f"{why}") for n in names]
    results = []
    for i, name in enumerate(names):
        reference, got = expected[name], ranks[0][i]
        if "skip" in (reference[0], got[0]):
            results.append(_result(registry, name, "skip", "opted out: " + str(reference[1])))
        elif reference[0] == "error":
            results.append(_result(registry, name, "fail", "one process: " + reference[1]))
        elif got[0] == "error":
            results.append(_result(registry, name, "fail", f"{world_size} processes: " + got[1]))
        else:
            problem = compare(reference[1], got[1], world_size)
            detail = problem or f"{world_size} gloo processes match 1 process (loss and gradients)"
            results.append(_result(registry, name, "fail" if problem else "pass", detail))
    return results
