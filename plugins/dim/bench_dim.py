"""``selfsup bench dim``: Deep InfoMax on Fashion-MNIST for a fixed wall-clock budget.

Trains DIM(G), DIM(L) with JSD and DIM(L) with InfoNCE (the ``dim`` objective through the
ordinary engine, on the un-augmented images) for ``--minutes`` each, then prints cosine
kNN (k=200, T=0.1) and linear-probe accuracy beside the same encoder at random
initialisation (every variant starts from the same seeded weights), for the layers the DIM
paper evaluates: the 64-d code (what ``embed`` returns by default) and the 1024-d fc layer
(``--layers``; ``conv`` adds the last conv layer). ``--eval-at`` adds intermediate
evaluations (minutes of training) to show the trend; evaluation time is not counted in the
budget.
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
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--critic-dim", type=int, default=256, help="hidden/embedding width of the critics "
                   "(the separable critic's temperature is sqrt of it)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-train", type=int, default=0, help="training images used as kNN memory (0: all)")
    p.add_argument("--no-linear", action="store_true", help="skip the linear probe")
    p.add_argument("--layers", nargs="+", default=["code", "fc"], choices=["code", "fc", "conv"],
                   help="representations evaluated: the 64-d code, the fc layer, the last conv layer")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench_dim", help="run folders go here")
    args = p.parse_args(argv)
    if args.minutes <= 0 or any(m <= 0 or m > args.minutes for m in args.eval_at):
        p.error("--minutes must be > 0 and every --eval-at within (0, minutes]")
    return args


def evaluate_layers(objective, data, eval_cfg, device, layers: list[str]) -> dict[str, dict[str, Any]]:
    """kNN / linear-probe results of each representation in ``layers`` (see DeepInfoMax.embed_layer)."""
    from selfsup.engine.evaluate import evaluate

    results = {}
    chosen = objective.embed_layer
    try:
        for layer in layers:
            objective.embed_layer = layer
            results[layer] = evaluate(objective, data, eval_cfg, device)
    finally:
        objective.embed_layer = chosen
    return results


def main(argv: list[str]) -> int:
    """DIM(G), DIM(L)+JSD, DIM(L)+InfoNCE on Fashion-MNIST: kNN / linear accuracy vs random init."""
    from selfsup.config import EvalConfig
    from selfsup.engine import build_trainer

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    eval_cfg = EvalConfig(linear_probe=not args.no_linear, plots=False)
    marks = sorted({*args.eval_at, args.minutes})
    out_dir = Path(args.out)
    rows: list[tuple[str, str, int, str, dict[str, Any]]] = []
    baseline: dict[str, dict[str, Any]] = {}
    print(f"DIM on {args.data}: {args.minutes:g} min per variant, batch {args.batch_size}, Adam lr {args.lr}, "
          f"{args.threads} threads, layers {', '.join(args.layers)}")
    for variant in args.variants:
        trainer = build_trainer(OmegaConf.create(pipeline(variant, args, out_dir)), run_dir=out_dir / variant)
        data = eval_subset(trainer.data, args.eval_train, args.seed)
        if not baseline:  # every variant's encoder starts from the same seeded weights
            baseline = evaluate_layers(trainer.objective, data, eval_cfg, trainer.device, args.layers)
            for layer, result in baseline.items():
                rows.append(("random init", "0", 0, layer, result))
                print(f"  random init, {layer}: {describe(result)}", flush=True)
        done = 0.0
        for mark in marks:
            tick = time.perf_counter()
            if done > 0:  # continue from the checkpoint the last slice wrote
                trainer = build_trainer(OmegaConf.create(pipeline(variant, args, out_dir)), run_dir=out_dir / variant)
            train_for(trainer, 60.0 * (mark - done), resume=done > 0)
            done = mark
            steps = trainer.global_step
            for layer, result in evaluate_layers(trainer.objective, data, eval_cfg, trainer.device, args.layers).items():
                rows.append((f"DIM({variant})", f"{mark:g}", steps, layer, result))
                print(f"  DIM({variant}) after {mark:g} min ({steps} steps), {layer}: {describe(result)}", flush=True)
            print(f"  ({time.perf_counter() - tick:.0f} s with evaluation)", flush=True)
    print_table(rows, baseline)
    return 0


def describe(result: dict[str, Any]) -> str:
    text = f"kNN {100 * result['knn_acc']:.2f}%"
    return text + (f", linear {100 * result['linear_acc']:.2f}%" if "linear_acc" in result else "")


def print_table(rows: list[tuple[str, str, int, str, dict[str, Any]]], baseline: dict[str, dict[str, Any]]) -> None:
    """One line per (model, minutes, layer); 'vs init' is the kNN gain over the same layer at init."""
    header = ["model", "minutes", "steps", "layer", "kNN %", "vs init", "linear %", "vs init"]
    lines = []
    for model, minutes, steps, layer, r in rows:
        base = baseline[layer]
        knn_gain = f"{100 * (r['knn_acc'] - base['knn_acc']):+.2f}"
        linear = f"{100 * r['linear_acc']:.2f}" if "linear_acc" in r else "-"
        linear_gain = f"{100 * (r['linear_acc'] - base['linear_acc']):+.2f}" if "linear_acc" in r else "-"
        lines.append([model, minutes, str(steps), layer, f"{100 * r['knn_acc']:.2f}", knn_gain, linear, linear_gain])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in (0, 3) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    print("\n" + fmt(header))
    for line in lines:
        print(fmt(line))
