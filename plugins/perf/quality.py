"""``selfsup bench quality PIPELINE --minutes M``: kNN accuracy against training wall-clock time.

Trains for a fixed budget of training time (evaluation pauses the clock), with the learning
rate schedule stretched over the steps that fit in the budget, and evaluates the cosine kNN
monitor (k=200, T=0.1) on the test split at regular intervals. Writes the curve as CSV and
PNG, so methods and settings are compared per minute of compute.

The number of steps that fit is first estimated from 10 timed steps, then re-estimated from
the measured pace at 10% and 50% of the budget (``Trainer.set_total_steps``): the first
steps run slower than the steady state, and a schedule sized from them alone ends the run
a quarter early.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from selfsup.config import load_pipeline
from selfsup.engine import Trainer, build_trainer
from selfsup.engine.evaluate import evaluate
from selfsup.evaluation.plots import save_curves


def _time_steps(trainer: Trainer, steps: int, warmup: int = 2) -> float:
    """Mean seconds per training step over ``steps`` steps after ``warmup``."""
    batches = trainer.loader.epoch(0)
    for _ in range(warmup):  # first steps pay for allocations and kernel selection
        trainer.train_step(*next(batches))
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(*next(batches))
    return (time.perf_counter() - start) / steps


def retarget(trainer: Trainer, elapsed_s: float, budget_s: float) -> int:
    """Re-size the run (``trainer.total_steps``) to the steps that fit in ``budget_s`` at the
    pace so far; returns the new total."""
    pace = trainer.global_step / elapsed_s
    total_steps = max(trainer.global_step + int((budget_s - elapsed_s) * pace), trainer.global_step, 1)
    if total_steps != trainer.total_steps:
        print(f"  measured {1000 / pace:.0f} ms/step at {elapsed_s / 60:.2f} min -> {total_steps} steps in all",
              flush=True)
        trainer.set_total_steps(total_steps)
    return total_steps


def run(pipeline: str, overrides: list[str], minutes: float, evals: int, out: Path) -> list[dict]:
    base = [*overrides, "trainer.progress=false", "trainer.eval_before=false", "eval.linear_probe=false"]
    probe = build_trainer(load_pipeline(pipeline, base), run_dir=out / "run")
    step_s = _time_steps(probe, max(1, min(10, probe.steps_per_epoch - 2)))
    total_steps = max(int(minutes * 60 / step_s), 1)
    epochs = -(-total_steps // probe.steps_per_epoch)
    cfg = load_pipeline(pipeline, [*base, f"trainer.max_steps={total_steps}", f"trainer.epochs={epochs}"])
    trainer = build_trainer(cfg, run_dir=out / "run")
    eval_cfg = trainer.settings.eval
    print(f"{pipeline}: ~{1000 * step_s:.0f} ms/step -> {total_steps} steps ({epochs} epochs) in {minutes} min")

    rows: list[dict] = []

    def record(elapsed: float) -> None:
        result = evaluate(trainer.objective, trainer.data, eval_cfg, trainer.device)
        rows.append({"minutes": elapsed / 60, "step": trainer.global_step, "knn_acc": result["knn_acc"]})
        print(f"  {elapsed / 60:6.2f} min  step {trainer.global_step:6d}  kNN {100 * result['knn_acc']:.2f}%", flush=True)

    record(0.0)
    checkpoints = [minutes * 60 * (i + 1) / evals for i in range(evals)]
    retargets = [0.1 * minutes * 60, 0.5 * minutes * 60]
    elapsed = 0.0
    trainer.objective.train()
    while trainer.global_step < trainer.total_steps and elapsed < minutes * 60:
        for images, labels, index in trainer.loader.epoch(trainer.epoch):
            start = time.perf_counter()
            trainer.train_step(images, labels, index)
            elapsed += time.perf_counter() - start
            if retargets and elapsed >= retargets[0]:
                retargets.pop(0)
                retarget(trainer, elapsed, minutes * 60)
            if checkpoints and elapsed >= checkpoints[0]:
                checkpoints.pop(0)
                record(elapsed)
            if trainer.global_step >= trainer.total_steps or elapsed >= minutes * 60:
                break
        trainer.epoch += 1
    if not rows or rows[-1]["step"] != trainer.global_step:
        record(elapsed)

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "quality.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    name = OmegaConf.select(cfg, "objective.name") or Path(pipeline).stem
    save_curves({str(name): ([r["minutes"] for r in rows], [100 * r["knn_acc"] for r in rows])},
                out / "quality.png", xlabel="training time (min)", ylabel="kNN accuracy (%)")
    best = max(rows, key=lambda r: r["knn_acc"])
    print(f"best kNN {100 * best['knn_acc']:.2f}% at {best['minutes']:.2f} min; final "
          f"{100 * rows[-1]['knn_acc']:.2f}%; wrote {out / 'quality.csv'} and {out / 'quality.png'}")
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="selfsup bench quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("pipeline")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides")
    parser.add_argument("--minutes", type=float, default=15.0, help="training-time budget")
    parser.add_argument("--evals", type=int, default=5, help="evaluations spread over the budget")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-quality"))
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.evals < 1:
        parser.error(f"--minutes must be positive and --evals at least 1, got {args.minutes} and {args.evals}")
    torch.manual_seed(0)
    run(args.pipeline, args.overrides, args.minutes, args.evals, args.out)
    return 0
