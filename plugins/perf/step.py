"""``selfsup bench step PIPELINE [overrides]``: images/s, a per-phase breakdown and step/floor.

The *floor* is a hand-written loop doing only the work an objective cannot avoid, on one
fixed batch: the query encoder (and projector) forward and backward on the views it
trains, the momentum encoder's forward where it has one, and the optimiser step. The ratio
step/floor is what the framework costs beyond the network itself (augmentation, critic,
estimator, sampler and momentum updates, logging). Steps and floor steps are timed in
back-to-back pairs (alternating which goes first) and step/floor is the median of the
pairs' ratios, with its quartiles: on a shared machine the load drifts by more than the
framework's cost, and a pair sees nearly the same load.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from selfsup.config import load_pipeline
from selfsup.engine import Trainer, build_trainer
from selfsup.profiling import StepProfiler, phase


def _seconds_per_call(fn: Callable[[], object], calls: int, device: torch.device) -> list[float]:
    times = []
    for _ in range(calls):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def floor_step_fn(trainer: Trainer, images: torch.Tensor) -> Callable[[], None]:
    """The unavoidable work of one step of ``trainer.objective`` on ``images`` (no augmentation).

    Uses the objective's ``encoder`` and optional ``projector``, ``key_encoder`` and
    ``key_projector`` attributes. Every trained view is also encoded by the key encoder;
    the number of trained views follows ``symmetric`` where the objective has it (MoCo),
    else ``num_views``.
    """
    objective = trainer.objective
    encoder: nn.Module = objective.encoder
    projector: nn.Module = getattr(objective, "projector", nn.Identity())
    key_encoder = getattr(objective, "key_encoder", None)
    key_projector = getattr(objective, "key_projector", nn.Identity())
    # MoCo v1/v2 with symmetric=false trains one view against the other's key; otherwise every view is trained
    query_views = (2 if objective.symmetric else 1) if hasattr(objective, "symmetric") else max(objective.num_views, 1)
    images = images.contiguous(memory_format=trainer.memory_format)
    views = [images, images.flip(-1).contiguous(memory_format=trainer.memory_format)][:query_views]
    optimizer = trainer.optimizer  # the same update rule (momentum, weight decay) as the real step
    amp = trainer.amp_dtype

    def step() -> None:
        with torch.autocast(trainer.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            outputs = [projector(encoder(v).global_) for v in views]
            if key_encoder is not None:
                with torch.no_grad():
                    for v in views:  # as many keys as queries
                        key_projector(key_encoder(v).global_)
            loss = sum(o.float().square().mean() for o in outputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def run(pipeline: str, overrides: list[str], steps: int, warmup: int) -> dict[str, Any]:
    cfg = load_pipeline(pipeline, [*overrides, "trainer.progress=false", "trainer.eval_before=false"])
    trainer = build_trainer(cfg, run_dir="/tmp/selfsup-bench-step")
    batches = trainer.loader.epoch(0)
    device = trainer.device
    batch_size = trainer.settings.data.batch_size

    def train_step() -> None:
        nonlocal batches
        with phase("data"):
            try:
                images, labels, index = next(batches)
            except StopIteration:
                batches = trainer.loader.epoch(0)
                images, labels, index = next(batches)
        trainer._step(images, labels, index)

    images = next(trainer.loader.epoch(1))[0]
    floor = floor_step_fn(trainer, images)
    for _ in range(warmup):
        train_step()
        floor()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_times, floor_times = [], []
    for i in range(steps):  # back-to-back pairs in alternating order: a drifting load hits both alike
        for fn, times in [(train_step, step_times), (floor, floor_times)][:: -1 if i % 2 else 1]:
            times += _seconds_per_call(fn, 1, device)
    pair_ratios = sorted(s / f for s, f in zip(step_times, floor_times))
    profiled_steps = max(steps // 2, 3)
    with StepProfiler(device) as profiler:
        _seconds_per_call(train_step, profiled_steps, device)

    step_s, floor_s = statistics.median(step_times), statistics.median(floor_times)
    ratio = statistics.median(pair_ratios)
    ratio_q1, ratio_q3 = pair_ratios[len(pair_ratios) // 4], pair_ratios[(3 * len(pair_ratios)) // 4]
    breakdown = {name: seconds / profiled_steps for name, seconds in profiler.seconds.items()}
    augment_share = breakdown.get("augment", 0.0) / step_s
    print(f"pipeline {pipeline}  device {device}  batch {batch_size}  steps {steps} (+{warmup} warm-up)")
    print(f"step   {1000 * step_s:8.1f} ms   {batch_size / step_s:9.0f} images/s")
    print(f"floor  {1000 * floor_s:8.1f} ms   {batch_size / floor_s:9.0f} images/s")
    print(f"step/floor {ratio:.3f} (quartiles {ratio_q1:.3f}-{ratio_q3:.3f} over {steps} pairs)   "
          f"augmentation {100 * augment_share:.1f}% of the step   peak memory {_peak_memory_mib(device):.0f} MiB ({'GPU allocated' if device.type == 'cuda' else 'process RSS'})")
    print("\nbreakdown of one step (ms, share of the step):")
    for name, seconds in sorted(breakdown.items()):
        indent = "  " * name.count("/")
        print(f"  {indent}{name.split('/')[-1]:<22} {1000 * seconds:8.2f}  {100 * seconds / step_s:5.1f}%")
    return {"step_s": step_s, "floor_s": floor_s, "ratio": ratio, "ratio_quartiles": (ratio_q1, ratio_q3),
            "images_per_s": batch_size / step_s, "augment_share": augment_share, "breakdown": breakdown}


def _peak_memory_mib(device: torch.device) -> float:
    """Peak GPU memory allocated by torch, or on the CPU the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="selfsup bench step", description=__doc__.split("\n\n")[0])
    parser.add_argument("pipeline")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides")
    parser.add_argument("--steps", type=int, default=40, help="timed pairs of a step and a floor step")
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    run(args.pipeline, args.overrides, args.steps, args.warmup)
    return 0
