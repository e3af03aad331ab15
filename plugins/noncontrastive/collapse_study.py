"""``selfsup bench collapse``: SimSiam with and without its stop-gradient and predictor.

Trains three variants of one pipeline (``examples/collapse_study.yaml``, built in here too)
and follows the collapse monitor's diagnostics of the projections over training:

- ``simsiam``: stop-gradient and predictor (healthy);
- ``no_stop_gradient``: gradients flow into both branches (collapses, SimSiam Fig. 2);
- ``no_predictor``: projections compared directly (collapses, SimSiam Table 1).

Writes a PNG of per-dimension std, effective rank and probe kNN accuracy against the step,
one line per variant with the detector's flag marked, a CSV of the curves, and prints a
table. With ``--check`` the exit code is 1 unless exactly the broken variants are flagged.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

#: The pipeline every variant starts from (``examples/collapse_study.yaml`` holds the same).
#: The projector has no final BatchNorm: with one, each projection dimension keeps unit
#: batch variance and the broken variants cannot collapse to a point.
PIPELINE: dict[str, Any] = {
    "seed": 0,
    "data": {"dataset": {"name": "digits"}, "augment": {"name": "two_view"}, "batch_size": 128},
    "objective": {
        "name": "simsiam",
        "encoder": {"name": "small_conv", "width": 16},
        "embedding_dim": 128,
        "projector_last_batch_norm": False,
        "stop_gradient": True,
        "predictor": True,
    },
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5.0e-4},
    "schedule": {"name": "cosine", "warmup_epochs": 0},
    "trainer": {"epochs": 100, "max_steps": 300, "log_every": 5, "progress": False, "eval_before": False},
    "eval": {"knn_k": 200, "knn_temperature": 0.1, "linear_probe": False, "plots": False},
    "monitor": {
        "diagnostics": ["embedding_std", "effective_rank", "uniformity", "knn_accuracy"],
        "source": "project",
        "every": 10,
        "probe_size": 512,
        "collapse_std": 0.02,
        "collapse_rank": 3.0,
        "warmup_steps": 20,
    },
}

#: Variant name -> (pipeline overrides, whether it is expected to collapse).
VARIANTS: dict[str, tuple[dict[str, Any], bool]] = {
    "simsiam": ({}, False),
    "no_stop_gradient": ({"objective.stop_gradient": False}, True),
    "no_predictor": ({"objective.predictor": False}, True),
}
COLOURS = {"simsiam": "tab:green", "no_stop_gradient": "tab:red", "no_predictor": "tab:orange"}


def run_variant(pipeline: dict[str, Any], overrides: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Train one variant into ``run_dir``; return :func:`load_variant` of it."""
    from selfsup.engine import build_trainer

    dotlist = [f"{key}={value}" for key, value in overrides.items()]
    cfg = OmegaConf.merge(OmegaConf.create(pipeline), OmegaConf.from_dotlist(dotlist))
    if build_trainer(cfg, run_dir=run_dir).fit().interrupted:  # SIGINT / SIGTERM: stop the study
        raise KeyboardInterrupt
    return load_variant(run_dir)


def load_variant(run_dir: Path) -> dict[str, Any]:
    """A finished variant's monitor curves, collapse flag, final values and test kNN accuracy."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "curves": [r for r in rows if "embedding_std" in r],
        "collapse": metrics["monitor"]["collapse"],
        "final": metrics["monitor"]["values"],
        "loss": rows[-1]["loss"],
        "test_knn": (metrics.get("after") or {}).get("knn_acc", math.nan),
        "steps": metrics["steps"],
    }


def save_plot(results: dict[str, dict[str, Any]], thresholds: dict[str, float | None], path: Path,
              warmup_steps: int = 0) -> Path:
    """Three panels (std, effective rank, probe kNN accuracy) against the step, one line per variant.

    thresholds: ``collapse_std`` / ``collapse_rank`` (dashed lines); the first ``warmup_steps``
    (not checked by the detector) are shaded.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    panels = [("embedding_std", "std of normalised projections", thresholds.get("collapse_std")),
              ("effective_rank", "effective rank (RankMe) of projections", thresholds.get("collapse_rank")),
              ("knn_accuracy", "kNN accuracy of the representation (probe)", None)]
    figure = Figure(figsize=(15, 4.2))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3)
    for ax, (metric, title, threshold) in zip(axes, panels):
        for name, result in results.items():
            steps = [r["step"] for r in result["curves"]]
            values = [r[metric] for r in result["curves"]]
            flagged = result["collapse"]
            label = f"{name} (flagged at step {flagged['step']})" if flagged else f"{name} (not flagged)"
            ax.plot(steps, values, color=COLOURS.get(name), label=label, linewidth=1.8)
            if flagged:
                at = min(range(len(steps)), key=lambda i: abs(steps[i] - flagged["step"]))
                ax.plot([steps[at]], [values[at]], marker="X", markersize=11, color=COLOURS.get(name),
                        markeredgecolor="black")
        if threshold is not None:
            ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"collapse threshold {threshold:g}")
        if warmup_steps > 0:
            ax.axvspan(0, warmup_steps, color="grey", alpha=0.12, label="warm-up (not checked)")
        if metric == "effective_rank":
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_yticks([1, 2, 3, 5, 10, 20, 50])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    figure.suptitle("SimSiam collapse study: X marks where the collapse detector fired", fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def format_table(results: dict[str, dict[str, Any]]) -> str:
    header = (f"{'variant':<18} {'steps':>5} {'loss':>7} {'std':>7} {'eff.rank':>8} {'kNN probe':>9} "
              f"{'kNN test':>8}  {'flagged':<16} expected")
    lines = [header, "-" * len(header)]
    for name, r in results.items():
        flag = f"yes (step {r['collapse']['step']})" if r["collapse"] else "no"
        expected = "collapse" if VARIANTS.get(name, ({}, False))[1] else "healthy"
        lines.append(
            f"{name:<18} {r['steps']:>5} {r['loss']:>7.3f} {r['final']['embedding_std']:>7.4f} "
            f"{r['final']['effective_rank']:>8.2f} {100 * r['final'].get('knn_accuracy', math.nan):>8.1f}% "
            f"{100 * r['test_knn']:>7.1f}%  {flag:<16} {expected}"
        )
    return "\n".join(lines)


def save_csv(results: dict[str, dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = ["loss", "embedding_std", "effective_rank", "uniformity", "knn_accuracy"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "step", *metrics, "flagged_at"])
        for name, r in results.items():
            flagged = r["collapse"]["step"] if r["collapse"] else ""
            for row in r["curves"]:
                writer.writerow([name, row["step"], *(row.get(m, "") for m in metrics), flagged])
    return path


def main(argv: list[str]) -> int:
    """Train SimSiam with/without stop-gradient and predictor on digits; plot and tabulate collapse."""
    parser = argparse.ArgumentParser(prog="selfsup bench collapse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", type=Path, help="base pipeline YAML (default: the built-in one, "
                        "same as examples/collapse_study.yaml)")
    parser.add_argument("--steps", type=int, help="optimiser steps per variant (default: the pipeline's, 300)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("runs/collapse_study"), help="run folders go here")
    parser.add_argument("--plot", type=Path, help="PNG path (default: OUT/collapse_study.png)")
    parser.add_argument("--csv", type=Path, help="CSV of the curves (default: OUT/collapse_study.csv)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--check", action="store_true", help="exit 1 unless exactly the broken variants are flagged")
    parser.add_argument("--replot", action="store_true", help="do not train: re-read the run folders in OUT")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides of the base pipeline")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipeline = (OmegaConf.to_container(OmegaConf.load(args.pipeline)) if args.pipeline else copy.deepcopy(PIPELINE))
    if args.overrides:
        merged = OmegaConf.merge(OmegaConf.create(pipeline), OmegaConf.from_dotlist(args.overrides))
        pipeline = OmegaConf.to_container(merged)
    if args.steps is not None:
        pipeline["trainer"]["max_steps"] = args.steps
    results = {}
    for name in args.variants:
        if args.replot:
            results[name] = load_variant(args.out / name)
            continue
        print(f"--- {name}", flush=True)
        results[name] = run_variant(pipeline, VARIANTS[name][0], args.out / name)
    print()
    print(format_table(results))
    thresholds = {k: pipeline["monitor"].get(k) for k in ("collapse_std", "collapse_rank")}
    plot = save_plot(results, thresholds, args.plot or args.out / "collapse_study.png",
                     pipeline["monitor"].get("warmup_steps", 0))
    table = save_csv(results, args.csv or args.out / "collapse_study.csv")
    print(f"\nplot: {plot}\ncurves: {table}")
    wrong = [n for n, r in results.items() if bool(r["collapse"]) != VARIANTS[n][1]]
    if wrong:
        print(f"detector disagrees with the expectation for: {', '.join(wrong)}")
    return 1 if (args.check and wrong) else 0
