"""``selfsup bench mi``: MI estimators against a known answer (Poole et al. 2019, fig. 2).

x ~ N(0, I_d) and y = rho x + sqrt(1 - rho^2) eps have I(x; y) = -(d / 2) log(1 - rho^2).
The true MI steps through a staircase (default 2, 4, 6, 8, 10 nats, d = 20); for each
critic (separable, concat), batch size and estimator a fresh critic is trained with Adam
(lr 5e-4 separable, 2e-3 concat, cosine-annealed to lr/10 within each stage) on fresh
samples every step, scored as an ``[N, N]`` matrix (diagonal = positives, off-diagonal =
negatives) and read by the registered estimator. The table gives the mean and standard
deviation of the estimate over the last quarter of each stage; the PNG shows the estimates
against step with the truth and log(batch), the ceiling of InfoNCE. Runs are spread over
``--jobs`` processes.

Critics (MLP 256 hidden): separable = two MLPs (2 hidden layers, 32-d embedding, linear
shortcuts, temperature 4) and a dot product; concat = one MLP (1 hidden layer by default:
each further layer costs N * M * 256^2 per step) on ``[x, y]`` for all N x M pairs. The
concat MLP has to learn the product structure x . y from scratch; at 5e-4 it was still
1 nat short of the truth at the end of the first 400-step stage, hence its higher rate.

JSD is a training objective, not an MI value: its row reports the NWJ bound of the
JSD-trained critic shifted by one (``T = f + 1``, optimal when ``f`` is the log density
ratio, which is what JSD training converges to), as in Poole et al.'s notebook.
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from selfsup.interfaces import Critic, MIEstimator, Scores

from ..common.estimators import JSD, NWJ
from ..dim.critics import ConcatCritic, SeparableCritic
from .timing import Stopwatch

CRITICS = ("separable", "concat")


def rho_for_mi(mi: float, dim: int) -> float:
    """Correlation giving ``mi`` nats between d-dimensional x and y: sqrt(1 - e^{-2 I / d})."""
    return math.sqrt(1.0 - math.exp(-2.0 * mi / dim))


def gaussian_mi(rho: float, dim: int) -> float:
    """I(x; y) = -(d / 2) log(1 - rho^2) for the componentwise-correlated Gaussian pair."""
    return -0.5 * dim * math.log1p(-rho * rho)


def correlated_gaussians(n: int, dim: int, mi: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``x, y [n, dim]`` with ``I(x; y) = mi`` nats."""
    rho = rho_for_mi(mi, dim)
    x = torch.randn(n, dim, generator=generator)
    eps = torch.randn(n, dim, generator=generator)
    return x, rho * x + math.sqrt(1.0 - rho * rho) * eps


def make_critic(
    kind: str,
    dim: int,
    hidden_dim: int = 256,
    embedding_dim: int = 32,
    hidden_layers: int = 2,
    shortcut: bool = True,
    temperature: float = 4.0,
) -> Critic:
    """A critic on vectors ``[N, dim] x [M, dim] -> [N, M]``.

    separable: two MLPs (``hidden_layers`` x ``hidden_dim``, output ``embedding_dim``) and a
    dot product divided by ``temperature``; with ``shortcut`` each MLP has a linear
    shortcut that starts as the identity, so the critic starts near ``x . y / T`` (the
    temperature keeps those first scores O(1)). ``shortcut=False, temperature=1`` is Poole
    et al.'s critic. concat: one MLP on ``[x, y]`` for all N x M pairs.
    """
    if kind == "separable":
        return SeparableCritic(dim, dim, hidden_dim, embedding_dim, hidden_layers, shortcut=shortcut,
                               batch_norm=False, temperature=temperature)
    if kind == "concat":
        return ConcatCritic(dim, dim, hidden_dim, hidden_layers)
    raise ValueError(f"critic must be one of {', '.join(CRITICS)}; got {kind!r}")


def reported_mi(estimator: MIEstimator, scores: Scores, mi: Tensor) -> float:
    """The MI value a row reports: the estimator's own, or for JSD the NWJ bound of f + 1."""
    if isinstance(estimator, JSD):
        negative = scores.negative + 1.0 if scores.negative is not None else None
        return float(NWJ()(Scores(scores.positive + 1.0, negative)).mi)
    return float(mi)


@dataclass
class Run:
    """One trained critic: its settings and the estimate after every step ``[stages * steps]``."""

    critic: str
    batch_size: int
    estimator: str
    estimates: np.ndarray
    seconds: float


def train_estimator(
    estimator: MIEstimator,
    critic: Critic,
    stages: list[float],
    steps_per_stage: int,
    batch_size: int,
    dim: int,
    lr: float = 5e-4,
    seed: int = 0,
    anneal: bool = False,
) -> np.ndarray:
    """Train ``critic`` with ``estimator``'s loss through the MI staircase; per-step estimates.

    anneal: within each stage, cosine-anneal the learning rate from ``lr`` to ``lr / 10``
    (restarting at every stage), which lowers the critic's jitter at the end of a stage.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(critic.parameters(), lr=lr)
    same = torch.eye(batch_size, dtype=torch.bool)
    out = np.empty(len(stages) * steps_per_stage)
    step = 0
    for mi in stages:
        for i in range(steps_per_stage):
            if anneal:
                optimizer.param_groups[0]["lr"] = lr * (0.55 + 0.45 * math.cos(math.pi * i / steps_per_stage))
            x, y = correlated_gaussians(batch_size, dim, mi, generator)
            scores = Scores.from_matrix(critic(x, y), same)  # [N, N]: diagonal = joint samples
            estimate = estimator(scores)
            optimizer.zero_grad(set_to_none=True)
            estimate.loss.backward()
            optimizer.step()
            with torch.no_grad():
                out[step] = reported_mi(estimator, scores, estimate.mi)
            step += 1
    return out


def stage_summary(estimates: np.ndarray, steps_per_stage: int, tail: float = 0.25) -> list[tuple[float, float]]:
    """(mean, std) of the estimates over the last ``tail`` fraction of each stage."""
    keep = max(1, int(round(steps_per_stage * tail)))
    stages = estimates.reshape(-1, steps_per_stage)[:, -keep:]
    return [(float(s.mean()), float(s.std())) for s in stages]


def save_plot(runs: list[Run], stages: list[float], steps_per_stage: int, path: Path) -> Path:
    """Estimate against step per (critic, batch size) panel, with the truth and log(batch)."""
    from matplotlib.figure import Figure

    from selfsup.evaluation import save_figure

    critics = sorted({r.critic for r in runs}, key=CRITICS.index)
    batches = sorted({r.batch_size for r in runs})
    figure = Figure(figsize=(5 * len(batches), 3.6 * len(critics)))
    axes = figure.subplots(len(critics), len(batches), squeeze=False, sharey=True)
    steps = np.arange(len(stages) * steps_per_stage)
    truth = np.repeat(stages, steps_per_stage)
    window = max(1, steps_per_stage // 20)
    for r_i, critic in enumerate(critics):
        for b_i, batch in enumerate(batches):
            ax = axes[r_i][b_i]
            for run in (r for r in runs if r.critic == critic and r.batch_size == batch):
                smooth = np.convolve(run.estimates, np.ones(window) / window, mode="valid")
                ax.plot(steps[window - 1 :], smooth, linewidth=1.0, label=run.estimator)
            ax.plot(steps, truth, color="black", linewidth=1.5, label="true MI")
            ax.axhline(math.log(batch), color="grey", linestyle="--", linewidth=1.0, label="log(batch)")
            ax.set_title(f"{critic} critic, batch {batch}")
            ax.set_xlabel("step")
            ax.set_ylim(-1, max(stages) + 4)
            ax.grid(True, alpha=0.3)
        axes[r_i][0].set_ylabel("MI estimate (nats)")
    axes[0][-1].legend(loc="upper left", fontsize="small")
    return save_figure(figure, path)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="selfsup bench mi", description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=20)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--stages", type=float, nargs="+", default=[2, 4, 6, 8, 10], help="true MI per stage (nats)")
    p.add_argument("--steps-per-stage", type=int, default=400)
    p.add_argument("--critics", nargs="+", default=list(CRITICS), choices=CRITICS)
    p.add_argument("--estimators", nargs="+", default=["jsd", "dv", "infonce", "nwj"], help="registered estimators")
    p.add_argument("--hidden-dim", type=int, default=256)
    p.add_argument("--embedding-dim", type=int, default=32, help="separable critic's embedding width")
    p.add_argument("--separable-layers", type=int, default=2, help="hidden layers of each separable MLP")
    p.add_argument("--concat-layers", type=int, default=1,
                   help="hidden layers of the concat MLP (each extra one costs N*M*hidden^2 per step)")
    p.add_argument("--temperature", type=float, default=4.0, help="separable critic's temperature")
    p.add_argument("--no-shortcut", action="store_true", help="separable MLPs without linear shortcuts (Poole et al.)")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate of the separable critic")
    p.add_argument("--concat-lr", type=float, default=2e-3, help="Adam learning rate of the concat critic")
    p.add_argument("--no-anneal", action="store_true", help="constant lr instead of a cosine to lr/10 per stage")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="runs trained in parallel processes (1 thread each)")
    p.add_argument("--plot", default="mi_benchmark.png", help="PNG path ('' to skip)")
    p.add_argument("--csv", default="", help="write per-stage results to this CSV")
    args = p.parse_args(argv)
    if args.steps_per_stage < 4 or args.dim < 1 or min(args.batch_sizes) < 2 or args.jobs < 1:
        p.error("need --steps-per-stage >= 4, --dim >= 1, batch sizes >= 2 and --jobs >= 1")
    if args.lr <= 0 or args.concat_lr <= 0:
        p.error(f"learning rates must be positive, got --lr {args.lr} and --concat-lr {args.concat_lr}")
    return args


def run_one(args: argparse.Namespace, critic_kind: str, batch: int, name: str, threads: int = 0) -> Run:
    """Train one (critic, batch size, estimator) combination; seeded, the same data stream for each."""
    from selfsup.plugin_manager import default_registry

    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    layers = args.separable_layers if critic_kind == "separable" else args.concat_layers
    critic = make_critic(critic_kind, args.dim, args.hidden_dim, args.embedding_dim, layers,
                         shortcut=not args.no_shortcut, temperature=args.temperature)
    estimator = default_registry().create("estimator", name)
    clock = Stopwatch()
    lr = args.concat_lr if critic_kind == "concat" else args.lr
    estimates = train_estimator(estimator, critic, args.stages, args.steps_per_stage, batch, args.dim, lr,
                                args.seed, anneal=not args.no_anneal)
    return Run(critic_kind, batch, name, estimates, clock.seconds)


def run_all(args: argparse.Namespace, log=print) -> list[Run]:
    """Every (critic, batch size, estimator) combination, ``args.jobs`` processes at a time."""
    combos = [(c, b, e) for c in args.critics for b in args.batch_sizes for e in args.estimators]
    if args.jobs == 1:
        runs = []
        for combo in combos:
            runs.append(run_one(args, *combo))
            log(f"  trained {combo[0]:<9} batch {combo[1]:<4} {combo[2]:<8} in {runs[-1].seconds:5.1f} s")
        return runs
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # the costliest runs (concat critic, big batches) first, so the pool ends evenly
    order = sorted(combos, key=lambda c: (c[0] != "concat", -c[1]))
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {combo: pool.submit(run_one, args, *combo, 1) for combo in order}
        for combo in order:
            run = futures[combo].result()
            log(f"  trained {combo[0]:<9} batch {combo[1]:<4} {combo[2]:<8} in {run.seconds:5.1f} s")
    return [futures[combo].result() for combo in combos]


def format_table(runs: list[Run], stages: list[float], steps_per_stage: int) -> list[list[str]]:
    rows = []
    for run in runs:
        for true_mi, (mean, std) in zip(stages, stage_summary(run.estimates, steps_per_stage)):
            rows.append([run.critic, str(run.batch_size), run.estimator, f"{true_mi:.1f}", f"{mean:.2f}",
                         f"{std:.2f}", f"{math.log(run.batch_size):.2f}"])
    return rows


def main(argv: list[str]) -> int:
    """Known-answer MI benchmark on correlated Gaussians: estimate vs truth per estimator and critic."""
    args = parse_args(argv)
    clock = Stopwatch()
    print(f"MI benchmark: d={args.dim}, stages {args.stages} nats, {args.steps_per_stage} steps per stage, "
          f"Adam lr {args.lr} separable / {args.concat_lr} concat"
          f"{'' if args.no_anneal else ' (cosine to lr/10 in each stage)'}, critics {args.critics}, "
          f"batches {args.batch_sizes}, {args.jobs} parallel jobs")
    runs = run_all(args)
    header = ["critic", "batch", "estimator", "true MI", "estimate", "std", "log(batch)"]
    rows = format_table(runs, args.stages, args.steps_per_stage)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    print(f"(estimate: mean +- std over the last {max(1, round(args.steps_per_stage / 4))} steps of each stage; "
          "jsd rows: NWJ bound of the JSD-trained critic + 1)")
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            csv.writer(handle).writerows([header, *rows])
        print(f"wrote {args.csv}")
    if args.plot:
        print(f"wrote {save_plot(runs, args.stages, args.steps_per_stage, Path(args.plot))}")
    print(f"total {clock.seconds:.0f} s")
    return 0
