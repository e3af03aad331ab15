"""``selfsup bench step PIPELINE [overrides]``: images/s, a per-phase breakdown and step/floor.

The *floor* is a hand-written loop doing only the work an objective cannot avoid, on one
fixed batch: the query encoder (and projector) forward and backward on the views it
trains, the momentum encoder's forward where it has one, and the optimiser step. The ratio
step/floor is what the framework costs beyond the network itself (augmentation, critic,
estimator, sampler and momentum updates, logging). For MoCo with a queue a second
*reference* adds what every MoCo implementation computes besides the networks (the
textbook InfoNCE against the queue, the momentum update, the enqueue), so step/reference
is the framework's own cost, augmentation included. Images/s come from consecutive steps,
as in training. The ratios come from back-to-back rounds of a step, a floor step (and a
reference step) in rotating order, and are the medians of the rounds' ratios, with their
quartiles: on a shared machine the load drifts by more than the framework's cost, and a
round sees nearly the same load.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.config import load_pipeline
from selfsup.engine import Trainer, build_trainer
from selfsup.profiling import StepProfiler, phase

from ..common.critics import DotCritic
from ..common.estimators import InfoNCE
from ..common.momentum import momentum_update
from ..common.samplers import MomentumQueue
from .timing import median_and_quartiles, peak_memory_mib, reset_peak_memory, rotating_rounds, seconds_per_call


def _fixed_views(trainer: Trainer, images: Tensor, count: int) -> list[Tensor]:
    """``count`` (1 or 2) fixed views of ``images`` ``[N, C, H, W]``: the batch, then its mirror image."""
    return [v.contiguous(memory_format=trainer.memory_format) for v in (images, images.flip(-1))[:count]]


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
    views = _fixed_views(trainer, images, query_views)
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


def moco_reference_loss(query: Tensor, key: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo's loss as its paper's pseudocode writes it: logits ``[N, 1 + K]``, cross-entropy on column 0.

    query, key: L2-normalised ``[N, E]``; queue: ``[K, E]``.
    """
    logits = torch.cat([(query * key).sum(dim=1, keepdim=True), query @ queue.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(query.shape[0], dtype=torch.long, device=query.device))


def moco_reference_step_fn(trainer: Trainer, images: Tensor) -> Callable[[], None] | None:
    """A hand-written MoCo step on ``images`` (no augmentation): the floor's networks, plus the
    textbook InfoNCE against the queue, the momentum update and the enqueue.

    None unless ``trainer.objective`` scores a :class:`MomentumQueue` with a :class:`DotCritic`
    and :class:`InfoNCE` (MoCo v1/v2); the queue is written in a copy, so the real step's
    queue is untouched.
    """
    objective = trainer.objective
    sampler, critic = getattr(objective, "sampler", None), getattr(objective, "critic", None)
    if not (isinstance(sampler, MomentumQueue) and isinstance(critic, DotCritic)
            and isinstance(getattr(objective, "estimator", None), InfoNCE)):
        return None
    queue = sampler.keys.clone()
    pointer = 0
    views = _fixed_views(trainer, images, 2 if objective.symmetric else 1)
    optimizer = trainer.optimizer
    momentum = objective.current_momentum(trainer.global_step, trainer.total_steps)

    def step() -> None:
        nonlocal pointer
        losses, keys = [], []
        for i, view in enumerate(views):
            query = F.normalize(objective.projector(objective.encoder(view).global_), dim=1)
            with torch.no_grad():
                key = F.normalize(objective.key_projector(objective.key_encoder(views[-1 - i]).global_), dim=1)
            losses.append(moco_reference_loss(query, key, queue, critic.temperature))
            keys.append(key)
        loss = sum(losses) / len(losses)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            momentum_update(objective.key_encoder, objective.encoder, momentum)
            momentum_update(objective.key_projector, objective.projector, momentum)
            for key in keys:
                slots = torch.arange(pointer, pointer + key.shape[0], device=queue.device) % queue.shape[0]
                queue.index_copy_(0, slots, key)
                pointer = (pointer + key.shape[0]) % queue.shape[0]

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
        trainer.train_step(images, labels, index)

    images = next(trainer.loader.epoch(1))[0]
    baselines = {"floor": floor_step_fn(trainer, images)}
    reference = moco_reference_step_fn(trainer, images)
    if reference is not None:
        baselines["reference"] = reference
    for _ in range(warmup):
        train_step()
        for baseline in baselines.values():
            baseline()
    reset_peak_memory(device)
    step_s = statistics.median(seconds_per_call(train_step, steps, device))  # back to back, as in training
    # rounds of one call each, in rotating order: a drifting load hits every member of a round alike
    times = rotating_rounds({"step": train_step, **baselines}, steps, device)
    ratios = {name: median_and_quartiles([s / b for s, b in zip(times["step"], times[name])]) for name in baselines}
    round_s = {name: statistics.median(t) for name, t in times.items()}
    profiled_steps = max(steps // 2, 3)
    with StepProfiler(device) as profiler:
        seconds_per_call(train_step, profiled_steps, device)

    breakdown = {name: seconds / profiled_steps for name, seconds in profiler.seconds.items()}
    augment_share = breakdown.get("augment", 0.0) / step_s
    print(f"pipeline {pipeline}  device {device}  batch {batch_size}  steps {steps} (+{warmup} warm-up)")
    print(f"training step  {1000 * step_s:.1f} ms   {batch_size / step_s:.0f} images/s   (consecutive steps)")
    print("in rounds      " + ", ".join(f"{name} {1000 * seconds:.1f} ms" for name, seconds in round_s.items()))
    print("  floor:       encoders + optimiser only, on one batch")
    if "reference" in baselines:
        print("  reference:   the floor + textbook InfoNCE against the queue, momentum update, enqueue")
    for name, (ratio, q1, q3) in ratios.items():
        print(f"step/{name:<9} {ratio:.3f} (quartiles {q1:.3f}-{q3:.3f} over {steps} rounds)")
    print(f"augmentation {100 * augment_share:.1f}% of the step   peak memory {peak_memory_mib(device):.0f} MiB "
          f"({'GPU allocated' if device.type == 'cuda' else 'process RSS'})")
    print("\nbreakdown of one step (ms, share of the step):")
    for name, seconds in sorted(breakdown.items()):
        indent = "  " * name.count("/")
        print(f"  {indent}{name.split('/')[-1]:<22} {1000 * seconds:8.2f}  {100 * seconds / step_s:5.1f}%")
    return {"step_s": step_s, "round_s": round_s,
            "ratio": ratios["floor"][0], "ratio_quartiles": ratios["floor"][1:],
            "reference_ratio": ratios["reference"][0] if "reference" in ratios else None,
            "images_per_s": batch_size / step_s, "augment_share": augment_share, "breakdown": breakdown}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="selfsup bench step", description=__doc__.split("\n\n")[0])
    parser.add_argument("pipeline")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides")
    parser.add_argument("--steps", type=int, default=40, help="consecutive timed steps, then as many timed rounds")
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error(f"--steps must be at least 1 and --warmup at least 0, got {args.steps} and {args.warmup}")
    run(args.pipeline, args.overrides, args.steps, args.warmup)
    return 0
