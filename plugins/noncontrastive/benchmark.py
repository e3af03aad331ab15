"""``selfsup bench noncontrastive``: the five bundles on Fashion-MNIST for one fixed budget.

Every bundle trains the same encoder (``small_conv``) from the same seed for the same number
of steps (``--steps``) or wall-clock minutes (``--minutes``: the step count is calibrated per
bundle from a few timed steps, so the cosine schedule still ends). Then the test split is
scored with the cosine kNN monitor (k=200, T=0.1, training split as memory) and the
representation's effective rank and per-dimension std are printed beside the randomly
initialised encoder's.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from selfsup.evaluation import extract_features, knn_accuracy

from ..diagnostics.functional import effective_rank, embedding_std

#: Objective and optimiser of each bundle (the encoder is set by --width).
METHODS: dict[str, dict[str, Any]] = {
    "simclr": {
        "objective": {"name": "simclr", "critic": {"name": "cosine", "temperature": 0.5}, "embedding_dim": 128},
        "optim": {"name": "sgd", "lr": 0.06, "momentum": 0.9, "weight_decay": 5.0e-4},
    },
    "byol": {
        "objective": {"name": "byol", "embedding_dim": 128, "momentum": 0.99},
        # SGD at 0.06 leaves BYOL below random init after 3 minutes (its target network lags)
        "optim": {"name": "adamw", "lr": 1.0e-3, "weight_decay": 1.0e-4},
    },
    "simsiam": {
        "objective": {"name": "simsiam", "embedding_dim": 256, "fixed_predictor_lr": True},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5.0e-4},
    },
    "barlow_twins": {
        "objective": {"name": "barlow_twins", "embedding_dim": 512, "projector_hidden_dim": 512},
        "optim": {"name": "adamw", "lr": 1.0e-3, "weight_decay": 1.0e-4},
    },
    "vicreg": {
        "objective": {"name": "vicreg", "embedding_dim": 512, "projector_hidden_dim": 512},
        "optim": {"name": "adamw", "lr": 1.0e-3, "weight_decay": 1.0e-4},
    },
}


def pipeline(method: str, args: argparse.Namespace, steps: int, run_dir: Path, log_every: int = 10) -> dict[str, Any]:
    spec = copy.deepcopy(METHODS[method])
    spec["objective"]["encoder"] = {"name": "small_conv", "width": args.width}
    return {
        "seed": args.seed,
        "data": {"dataset": {"name": "arrays", "path": str(args.data)}, "augment": {"name": "two_view"},
                 "batch_size": args.batch_size},
        "objective": spec["objective"],
        "optim": spec["optim"],
        "schedule": {"name": "cosine", "warmup_epochs": 0.0},
        "trainer": {"epochs": 10_000, "max_steps": steps, "log_every": max(1, min(log_every, steps)),
                    "channels_last": args.channels_last, "progress": False, "eval_before": False, "eval_after": False,
                    "out_dir": str(run_dir.parent), "run_name": run_dir.name},
        "eval": {"linear_probe": False, "plots": False},
    }


def _subset(n: int, limit: int | None, seed: int) -> torch.Tensor:
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


@torch.no_grad()
def score(objective, data, args: argparse.Namespace) -> dict[str, float]:
    """kNN accuracy on the test split, effective rank and std of the test representations."""
    objective.eval()
    train_index = _subset(len(data.train), args.eval_train, 1)
    test_index = _subset(len(data.test), args.eval_test, 2)
    train = extract_features(objective.embed, data.train.images[train_index], 512)
    test = extract_features(objective.embed, data.test.images[test_index], 512)
    objective.train()
    return {
        "knn_acc": knn_accuracy(train, data.train.labels[train_index], test, data.test.labels[test_index],
                                k=200, temperature=0.1, num_classes=data.num_classes),
        "effective_rank": float(effective_rank(test)),
        "std": float(embedding_std(test)),
        "dim": int(test.shape[1]),
    }


def calibrated_steps(method: str, args: argparse.Namespace) -> int:
    """Steps that fill ``args.minutes`` for ``method``, from the speed of a short timed run."""
    from selfsup.engine import build_trainer

    probe_steps = 12
    cfg = pipeline(method, args, probe_steps, args.out / f"{method}_calibration", log_every=4)
    trainer = build_trainer(OmegaConf.create(cfg), run_dir=args.out / f"{method}_calibration")
    if trainer.fit().interrupted:
        raise KeyboardInterrupt
    rows = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    images_per_s = rows[-1]["images_per_s"]  # steps 9..12: past the first steps' overheads
    return max(1, int(args.minutes * 60 * images_per_s / args.batch_size))


def run(method: str, args: argparse.Namespace, data_cache: dict) -> dict[str, Any]:
    from selfsup.engine import build_trainer

    steps = calibrated_steps(method, args) if args.minutes is not None else args.steps
    run_dir = args.out / method
    trainer = build_trainer(OmegaConf.create(pipeline(method, args, steps, run_dir)), run_dir=run_dir)
    data_cache.setdefault("data", trainer.data)
    if "baseline" not in data_cache:  # the same encoder, same seed, before any step
        data_cache["baseline"] = score(trainer.objective, trainer.data, args)
    start = time.perf_counter()
    if trainer.fit().interrupted:  # SIGINT / SIGTERM: stop the whole benchmark, not just this bundle
        raise KeyboardInterrupt
    seconds = time.perf_counter() - start
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"steps": trainer.global_step, "seconds": seconds, "loss": rows[-1]["loss"],
            **score(trainer.objective, trainer.data, args)}


def format_table(results: dict[str, dict[str, Any]], baseline: dict[str, float]) -> str:
    header = (f"{'method':<14} {'steps':>6} {'time':>7} {'kNN acc':>8} {'vs init':>8} {'eff.rank':>8} {'std':>7}"
              "  verdict")
    lines = [header, "-" * len(header),
             f"{'random init':<14} {0:>6} {'-':>7} {100 * baseline['knn_acc']:>7.2f}% {'':>8} "
             f"{baseline['effective_rank']:>8.2f} {baseline['std']:>7.4f}"]
    for name, r in results.items():
        gain = 100 * (r["knn_acc"] - baseline["knn_acc"])
        verdict = "beats random init" if gain > 0 else "DOES NOT beat random init"
        lines.append(f"{name:<14} {r['steps']:>6} {r['seconds']:>6.0f}s {100 * r['knn_acc']:>7.2f}% {gain:>+7.2f} "
                     f"{r['effective_rank']:>8.2f} {r['std']:>7.4f}  {verdict}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Train simclr, byol, simsiam, barlow_twins and vicreg on Fashion-MNIST; kNN, rank, std vs random init."""
    parser = argparse.ArgumentParser(prog="selfsup bench noncontrastive", description=__doc__.split("\n\n")[1])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fashion_mnist.npz"),
                        help="Fashion-MNIST .npz (x_train, y_train, x_test, y_test), read by the arrays dataset")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=1000, help="optimiser steps per bundle (default 1000)")
    budget.add_argument("--minutes", type=float, help="wall-clock minutes of training per bundle instead of --steps")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--width", type=int, default=32, help="small_conv width (representation = 8 * width)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                        help="keep NCHW memory order (channels-last is faster for these convs on CPU and GPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-train", type=int, help="kNN memory: this many training images (default all)")
    parser.add_argument("--eval-test", type=int, help="score this many test images (default all)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_noncontrastive"))
    parser.add_argument("--csv", type=Path, help="write the table as CSV here")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        parser.error(f"--data {args.data}: no such file (Fashion-MNIST as .npz with x_train/y_train/x_test/y_test)")
    torch.set_num_threads(args.threads)
    cache: dict = {}
    results = {}
    for method in args.methods:
        print(f"--- {method}", flush=True)
        results[method] = run(method, args, cache)
    baseline = cache["baseline"]
    print()
    print(format_table(results, baseline))
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["method", "steps", "seconds", "knn_acc", "effective_rank", "std"])
            writer.writerow(["random_init", 0, 0, baseline["knn_acc"], baseline["effective_rank"], baseline["std"]])
            for name, r in results.items():
                writer.writerow([name, r["steps"], round(r["seconds"], 1), r["knn_acc"], r["effective_rank"], r["std"]])
    losers = [n for n, r in results.items() if not r["knn_acc"] > baseline["knn_acc"]]
    if losers:
        print(f"\nnot above random init: {', '.join(losers)} (budget too short, or a collapse)")
    return 0 if not losers or math.isnan(baseline["knn_acc"]) else 1
