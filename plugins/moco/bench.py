"""``selfsup bench samplers``: the cost of a MoCo training step per negative sampler.

For the in-batch sampler and for the momentum queue and memory bank at each K, times one
full training step (two-view augmentation, query and key encoders, scores against the
negatives, InfoNCE, backward, SGD step, enqueue / bank update, momentum update) on a
synthetic batch, and reports the median step time relative to in-batch negatives.

The default encoder is the one MoCo uses for 32x32 images (ResNet-18 with the small-image
stem, batch 64 on the CPU); ``--encoder small_conv`` times the width-32 small conv net
instead, whose step is so cheap that the K x D negatives' matmuls are a visible share of it. Steps of
the configurations are interleaved round by round, in a fresh random order each round, so a
drifting machine load (and whatever one configuration leaves behind for the next, such as
freed memory) affects all of them alike.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..common.critics import DotCritic
from ..common.estimators import InfoNCE
from ..common.samplers import InBatchNegatives, MemoryBank, MomentumQueue
from ..data.augment import TwoViewAugment
from ..encoders.backbones import TorchvisionResNet
from ..encoders.conv import SmallConvNet
from .objective import MoCo


@dataclass
class Case:
    """One configuration under test and its timings (seconds per step)."""

    sampler: str
    negatives: int
    objective: MoCo
    optimizer: torch.optim.Optimizer
    times: list[float]

    @property
    def median_ms(self) -> float:
        return 1000.0 * statistics.median(self.times)

    @property
    def min_ms(self) -> float:
        """The fastest step: least disturbed by other processes on a shared machine."""
        return 1000.0 * min(self.times)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="selfsup bench samplers", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[4096, 65536], help="K values for queue and bank")
    p.add_argument("--encoder", choices=["resnet18", "small_conv"], default="resnet18",
                   help="resnet18: small-image stem, 3 channels (MoCo's CIFAR setup); small_conv: 1 channel")
    p.add_argument("--batch-size", type=int, default=None, help="default: 64 for resnet18, 256 for small_conv")
    p.add_argument("--image-size", type=int, default=None, help="default: 32 for resnet18, 28 for small_conv")
    p.add_argument("--width", type=int, default=32, help="small_conv width (features 8 x width)")
    p.add_argument("--dim", type=int, default=128, help="key width D")
    p.add_argument("--bank-size", type=int, default=60_000, help="memory-bank slots (training-set size)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per configuration first")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--csv", type=Path, help="write the table as CSV here")
    p.add_argument("--png", type=Path, help="save a bar chart here")
    args = p.parse_args(argv)
    resnet = args.encoder == "resnet18"
    args.batch_size = args.batch_size or (64 if resnet else 256)
    args.image_size = args.image_size or (32 if resnet else 28)
    args.channels = 3 if resnet else 1
    if min(args.sizes) <= 0 or args.batch_size < 2 or args.steps < 1 or args.warmup < 0:
        p.error("sizes and steps must be positive, batch size at least 2")
    return args


def build_case(sampler_name: str, k: int, args: argparse.Namespace, device: torch.device) -> Case:
    torch.manual_seed(0)
    if sampler_name == "in_batch":
        sampler = InBatchNegatives()
    elif sampler_name == "momentum_queue":
        sampler = MomentumQueue(size=k)
    else:
        sampler = MemoryBank(num_negatives=k)
    if args.encoder == "resnet18":
        encoder = TorchvisionResNet("resnet18", in_channels=args.channels, image_size=args.image_size)
    else:
        encoder = SmallConvNet(in_channels=args.channels, image_size=args.image_size, width=args.width)
    objective = MoCo(encoder, critic=DotCritic(0.2), estimator=InfoNCE(), sampler=sampler, embedding_dim=args.dim,
                     num_train=args.bank_size).to(device)
    optimizer = torch.optim.SGD(objective.parameter_groups(), lr=0.03, momentum=0.9, weight_decay=5e-4)
    return Case(sampler_name, k, objective, optimizer, [])


def train_step(case: Case, images: torch.Tensor, index: torch.Tensor, augment: TwoViewAugment,
               generator: torch.Generator, step: int) -> None:
    from selfsup.interfaces import Batch

    views = augment(images, 2, generator)
    out = case.objective(Batch(inputs=images, views=views, index=index))
    case.optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    case.optimizer.step()
    case.objective.after_step(step, 10_000)


def bench_samplers(argv: list[str]) -> int:
    """Step time per negative sampler (queue and bank at K = 4,096 / 65,536) relative to in-batch."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    cases = [build_case("in_batch", args.batch_size - 1, args, device)]
    for k in args.sizes:
        cases += [build_case("momentum_queue", k, args, device), build_case("memory_bank", k, args, device)]
    generator = torch.Generator(device).manual_seed(0)
    images = torch.rand(args.batch_size, args.channels, args.image_size, args.image_size, generator=generator, device=device)
    augment = TwoViewAugment()

    def timed(case: Case, step: int) -> float:
        index = torch.randperm(args.bank_size, device=device)[: args.batch_size]  # distinct samples
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        train_step(case, images, index, augment, generator, step)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for step in range(args.warmup):
        for case in cases:
            timed(case, step)
    order = torch.Generator().manual_seed(1)
    for step in range(args.steps):  # rounds in random order: load drift hits every configuration alike
        for i in torch.randperm(len(cases), generator=order).tolist():
            cases[i].times.append(timed(cases[i], args.warmup + step))

    baseline, baseline_min = cases[0].median_ms, cases[0].min_ms
    rows = [
        {"sampler": c.sampler, "negatives": c.negatives, "median_ms": round(c.median_ms, 3),
         "relative": round(c.median_ms / baseline, 4), "overhead_pct": round(100 * (c.median_ms / baseline - 1), 2),
         "min_ms": round(c.min_ms, 3), "overhead_min_pct": round(100 * (c.min_ms / baseline_min - 1), 2)}
        for c in cases
    ]
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    encoder = "resnet18 (small-image stem)" if args.encoder == "resnet18" else f"small_conv width {args.width}"
    print(f"MoCo step, {encoder} on {args.batch_size} x {args.image_size}x{args.image_size}, "
          f"{args.dim}-d keys, bank of {args.bank_size:,} slots, device {device}, threads {threads}, "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    print(f"{'sampler':<16}{'K':>8}{'median ms':>11}{'vs in_batch':>13}{'overhead':>10}{'min ms':>10}{'overhead':>10}")
    for r in rows:
        print(f"{r['sampler']:<16}{r['negatives']:>8}{r['median_ms']:>11.1f}{r['relative']:>13.3f}"
              f"{r['overhead_pct']:>9.1f}%{r['min_ms']:>10.1f}{r['overhead_min_pct']:>9.1f}%")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.png:
        save_chart(rows, args.png)
    return 0


def save_chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['sampler']}\nK={r['negatives']}" for r in rows]
    fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 2, 3.5))
    ax.bar(labels, [r["relative"] for r in rows], color=["grey"] + ["tab:blue", "tab:orange"] * len(rows))
    ax.axhline(1.05, color="red", linestyle="--", linewidth=1, label="+5%")
    ax.set_ylabel("step time / in-batch step time")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
