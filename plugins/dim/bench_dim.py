"""``selfsup bench dim``: Deep InfoMax on Fashion-MNIST for a fixed wall-clock budget.

Trains DIM(G), DIM(L) with JSD and DIM(L) with InfoNCE (the ``dim`` objective through the
ordinary engine, on the un-augmented images) for ``--minutes`` each, then prints cosine
kNN (k=200, T=0.1) and linear-probe accuracy of the 64-d code beside the same encoder at
random initialisation (every variant starts from the same seeded weights). ``--eval-at``
adds intermediate evaluations (minutes of training) to show the trend; evaluation time is
not counted in the budget.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import threading
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

#: Variant name -> (preset, estimator).
VARIANTS: dict[str, tuple[str, str]] = {
    "G": ("G", "jsd"),
    "L-jsd": ("L", "jsd"),
    "L-infonce": ("L", "infonce"),
}
DEFAULT_DATA = "../shared/data/fashion_mnist.npz"


def pipeline(variant: str, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """The pipeline of one variant (the same shape as examples/dim_fashion.yaml)."""
    preset, estimator = VARIANTS[variant]
    return {
        "seed": args.seed,
        "data": {"dataset": {"name": "arrays", "path": args.data}, "augment": None, "batch_size": args.batch_size},
        "objective": {
            "name": "dim",
            "preset": preset,
            "encoder": {"name": "dim_conv"},
            "estimator": {"name": estimator},
            "local_critic": {"name": "separable", "hidden_dim": args.critic_dim, "embedding_dim": args.critic_dim},
            "global_critic": {"name": "concat", "hidden_dim": args.critic_dim},
        },
        "optim": {"name": "adamw", "lr": args.lr, "weight_decay": 0.0},
        "schedule": {"name": "constant"},
        "trainer": {"epochs": 10_000, "progress": False, "eval_before": False, "eval_after": False,
                    "out_dir": str(out_dir), "run_name": variant, "log_every": 50, "device": args.device},
    }


def eval_subset(data, max_train: int, seed: int):
    """The splits with at most ``max_train`` training images (seeded choice) as kNN memory and probe set."""
    from selfsup.data import DataSplits

    if max_train <= 0 or max_train >= len(data.train):
        return data
    index = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:max_train]
    return DataSplits(data.train.select(index), data.test, data.class_names, data.source)


def train_for(trainer, seconds: float, resume: bool) -> None:
    """Train until ``seconds`` of wall clock have passed (the step in flight finishes)."""
    timer = threading.Timer(seconds, trainer.request_stop)
    timer.start()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # fit's "stopped ... resume with" note
            trainer.fit(resume=resume)
    finally:
        timer.cancel()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="selfsup bench dim", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="Fashion-MNIST .npz (loaded by the arrays dataset)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--minutes", type=float, default=15.0, help="training budget per variant")
    p.add_argument("--eval-at", type=float, nargs="*", default=[], help="extra evaluations (training minutes)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--critic-dim", type=int, default=256, help="hidden/embedding width of the critics")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-train", type=int, default=0, help="training images used as kNN memory (0: all)")
    p.add_argument("--no-linear", action="store_true", help="skip the linear probe")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench_dim", help="run folders go here")
    args = p.parse_args(argv)
    if args.minutes <= 0 or any(m <= 0 or m > args.minutes for m in args.eval_at):
        p.error("--minutes must be > 0 and every --eval-at within (0, minutes]")
    return args


def main(argv: list[str]) -> int:
    """DIM(G), DIM(L)+JSD, DIM(L)+InfoNCE on Fashion-MNIST: kNN / linear accuracy vs random init."""
    from selfsup.config import EvalConfig
    from selfsup.engine import build_trainer
    from selfsup.engine.evaluate import evaluate

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    eval_cfg = EvalConfig(linear_probe=not args.no_linear, plots=False)
    marks = sorted({*args.eval_at, args.minutes})
    out_dir = Path(args.out)
    rows: list[tuple[str, str, int, dict[str, Any]]] = []
    baseline = None
    print(f"DIM on {args.data}: {args.minutes:g} min per variant, batch {args.batch_size}, Adam lr {args.lr}, "
          f"{args.threads} threads")
    for variant in args.variants:
        trainer = build_trainer(OmegaConf.create(pipeline(variant, args, out_dir)), run_dir=out_dir / variant)
        data = eval_subset(trainer.data, args.eval_train, args.seed)
        if baseline is None:  # every variant's encoder starts from the same seeded weights
            baseline = evaluate(trainer.objective, data, eval_cfg, trainer.device)
            rows.append(("random init", "0", 0, baseline))
            print(f"  random init: {describe(baseline)}", flush=True)
        done = 0.0
        for mark in marks:
            tick = time.perf_counter()
            if done > 0:  # continue from the checkpoint the last slice wrote
                trainer = build_trainer(OmegaConf.create(pipeline(variant, args, out_dir)), run_dir=out_dir / variant)
            train_for(trainer, 60.0 * (mark - done), resume=done > 0)
            done = mark
            result = evaluate(trainer.objective, data, eval_cfg, trainer.device)
            rows.append((f"DIM({variant})", f"{mark:g}", trainer.global_step, result))
            print(f"  DIM({variant}) after {mark:g} min ({trainer.global_step} steps, "
                  f"{time.perf_counter() - tick:.0f} s with eval): {describe(result)}", flush=True)
    print_table(rows, baseline)
    return 0


def describe(result: dict[str, Any]) -> str:
    text = f"kNN {100 * result['knn_acc']:.2f}%"
    return text + (f", linear {100 * result['linear_acc']:.2f}%" if "linear_acc" in result else "")


def print_table(rows: list[tuple[str, str, int, dict[str, Any]]], baseline: dict[str, Any] | None) -> None:
    header = ["model", "minutes", "steps", "kNN %", "vs init", "linear %"]
    lines = []
    for model, minutes, steps, r in rows:
        gain = 100 * (r["knn_acc"] - baseline["knn_acc"]) if baseline else 0.0
        linear = f"{100 * r['linear_acc']:.2f}" if "linear_acc" in r else "-"
        lines.append([model, minutes, str(steps), f"{100 * r['knn_acc']:.2f}", f"{gain:+.2f}", linear])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print("\n" + "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    for line in lines:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
