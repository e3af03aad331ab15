"""Table, CSV and accuracy-vs-time plot of ``selfsup bench angular``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .angular import MethodResult

ANGULAR = ("arcface", "cosface", "sphereface")


def table_rows(results: list[MethodResult]) -> tuple[list[str], list[list[str]]]:
    counts = sorted({m for r in results for m in r.seconds_by_modalities})
    header = ["method", "proto acc", "kNN acc", "drop-one proto (mean/worst)", "drop-one kNN", "intra °",
              "inter °", "inter/intra", "s/epoch", *[f"s/epoch M={m}" for m in counts]]
    rows = []
    for r in results:
        f = r.final
        rows.append([
            r.name, f"{100 * f['proto_acc']:.2f}%", f"{100 * f['knn_acc']:.2f}%",
            f"{100 * f['drop_one_proto_mean']:.2f}% / {100 * f['drop_one_proto_worst']:.2f}%",
            f"{100 * f['drop_one_knn_mean']:.2f}%", f"{f['intra_deg']:.1f}", f"{f['inter_deg']:.1f}",
            f"{f['ratio']:.2f}", f"{f['seconds_per_epoch']:.2f}",
            *[f"{r.seconds_by_modalities[m]:.2f}" if m in r.seconds_by_modalities else "" for m in counts],
        ])
    return header, rows


def _markdown(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def print_table(results: list[MethodResult], modalities: list[str]) -> None:
    """Markdown tables, then the check that angular margins separate classes more than softmax CE."""
    _markdown(*table_rows(results))
    counts = sorted({m for r in results for m in r.seconds_by_modalities})
    print("proto acc: nearest learned prototype (pairwise_contrastive: nearest class mean of the training "
          "embeddings); kNN: k-nearest training embeddings; angles: mean over test pairs of the same / "
          "different classes; s/epoch: training time only"
          + (f"; M=k trains on the first k of {', '.join(modalities)}" if counts else "") + ".")
    print()
    print("Nearest-prototype accuracy with one modality removed at test time (trained on all):")
    _markdown(["method", *[f"without {m}" for m in modalities]],
              [[r.name, *[f"{100 * r.dropped[m]:.2f}%" for m in modalities]] for r in results])
    by_name = {r.name: r.final for r in results}
    if "softmax_ce" in by_name:
        base = by_name["softmax_ce"]["ratio"]
        for name in ANGULAR:
            if name in by_name:
                ratio = by_name[name]["ratio"]
                verdict = "larger" if ratio > base else "NOT larger"
                print(f"{name}: inter/intra angle ratio {ratio:.2f} vs softmax CE {base:.2f} ({verdict})")


def save_csv(results: list[MethodResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "epoch", "train_seconds", "proto_acc", "knn_acc"])
        for r in results:
            for epoch, (seconds, proto, knn) in enumerate(r.curve, 1):
                writer.writerow([r.name, epoch, f"{seconds:.3f}", f"{proto:.4f}", f"{knn:.4f}"])
    summary = path.with_name(path.stem + "_summary.csv")
    header, rows = table_rows(results)
    with summary.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def save_curves(results: list[MethodResult], path: Path) -> Path:
    """Test accuracy (nearest prototype solid, kNN dashed) against cumulative training time, one colour per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    ax = figure.add_subplot(1, 1, 1)
    for i, r in enumerate(results):
        seconds = [c[0] for c in r.curve]
        colour = f"C{i}"
        ax.plot(seconds, [100 * c[1] for c in r.curve], "-o", color=colour, markersize=3, label=f"{r.name} (prototype)")
        ax.plot(seconds, [100 * c[2] for c in r.curve], "--", color=colour, alpha=0.7, label=f"{r.name} (kNN)")
    ax.set_xlabel("training wall-clock time (s, evaluation excluded)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("multi-view digits: accuracy vs training time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path
