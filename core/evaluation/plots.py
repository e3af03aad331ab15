"""PNG plots of training curves and embeddings.

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly, never
through ``pyplot``: no global figure state, no GUI backend, safe in threads and on headless
machines. Each file is written to a temporary name in the target folder and then renamed,
so a reader never sees a half-written PNG.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

__all__ = ["save_curves", "save_embedding_map", "save_loss_curve"]

PathLike = str | os.PathLike[str]


def save_figure(figure: Figure, path: PathLike) -> Path:
    """Render ``figure`` to ``path`` as PNG, creating parent folders; write-then-rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            figure.savefig(handle, format="png", dpi=120, bbox_inches="tight")
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def _as_numpy(array: torch.Tensor | ArrayLike) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def save_loss_curve(
    steps: Sequence[int], losses: Sequence[float], path: PathLike, title: str = ""
) -> Path:
    """Plot loss against step and save it as a PNG.

    Args:
        steps: ``[T]`` optimisation steps (x axis).
        losses: ``[T]`` loss values (y axis); NaN points leave gaps.
        path: Output file; parent folders are created.
        title: Figure title.

    Returns:
        The path written, as a :class:`~pathlib.Path`.
    """
    x = _as_numpy(steps).astype(np.float64).reshape(-1)
    y = _as_numpy(losses).astype(np.float64).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"steps has {len(x)} values but losses has {len(y)}; they must match")
    if len(x) == 0:
        raise ValueError("steps and losses are empty; there is no curve to plot")
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    axes.plot(x, y, linewidth=1.5, marker="o" if len(x) < 30 else None, markersize=3)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(True, alpha=0.3)
    if title:
        axes.set_title(title)
    return save_figure(figure, path)


def save_curves(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: PathLike,
    xlabel: str,
    ylabel: str,
    title: str = "",
    hlines: Mapping[str, float] | None = None,
) -> Path:
    """Several named curves on one axis (e.g. accuracy against time per method), as a PNG.

    series: label -> (x ``[T]``, y ``[T]``); hlines: label -> y of a dashed reference line.
    """
    if not series:
        raise ValueError("no curves to plot")
    figure = Figure(figsize=(6.5, 4))
    axes = figure.add_subplot()
    for label, (x, y) in series.items():
        axes.plot(_as_numpy(x), _as_numpy(y), marker="o" if len(x) < 30 else None, markersize=3, label=label)
    for label, y in (hlines or {}).items():
        axes.axhline(y, linestyle="--", color="grey", linewidth=1)
        axes.annotate(label, (0.01, y), xycoords=("axes fraction", "data"), fontsize=8, color="grey",
                      va="bottom")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    if title:
        axes.set_title(title)
    return save_figure(figure, path)


def save_knn_curve(curve: Sequence[Mapping[str, float]], path: PathLike, title: str = "") -> Path:
    """kNN accuracy against training minutes (left) and steps (right), as a PNG.

    curve: points ``{step, minutes, knn_acc}`` (accuracy as a fraction), in training order.
    """
    if not curve:
        raise ValueError("no kNN points to plot")
    figure = Figure(figsize=(9, 3.6))
    accuracy = [100 * p["knn_acc"] for p in curve]
    for i, (key, label) in enumerate((("minutes", "training time (min)"), ("step", "optimiser steps"))):
        axes = figure.add_subplot(1, 2, i + 1)
        axes.plot([p[key] for p in curve], accuracy, marker="o", markersize=3)
        axes.set_xlabel(label)
        axes.set_ylabel("kNN accuracy (%)")
        axes.grid(True, alpha=0.3)
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def _subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_points`` rows out of ``n``, chosen by a seeded generator."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def _tsne_2d(features: np.ndarray, seed: int) -> np.ndarray:
    """``[n, D]`` -> ``[n, 2]`` t-SNE coordinates, PCA-initialised and seeded."""
    from sklearn.manifold import TSNE  # imported lazily: slow import, only needed here

    n = features.shape[0]
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3.0)))  # must stay below n
    tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed)
    return tsne.fit_transform(features)


def _class_name(label: int, class_names: Sequence[str] | Mapping[int, str] | None) -> str:
    if class_names is None:
        return str(label)
    if isinstance(class_names, Mapping):
        return str(class_names.get(label, label))
    return str(class_names[label]) if 0 <= label < len(class_names) else str(label)


def save_embedding_map(
    features: torch.Tensor | ArrayLike,
    labels: torch.Tensor | ArrayLike,
    path: PathLike,
    max_points: int = 2000,
    seed: int = 0,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    title: str = "",
) -> Path:
    """Save a 2-D t-SNE scatter of ``features`` coloured by class, with a legend.

    Args:
        features: ``[N, D]`` features, N >= 2, D >= 2.
        labels: ``[N]`` integer class labels.
        path: Output PNG file; parent folders are created.
        max_points: At most this many points are embedded (seeded random subset; t-SNE
            costs O(n log n) and is slow beyond a few thousand points).
        seed: Seeds both the subset and t-SNE, so equal inputs give equal plots.
        class_names: Names for the legend, indexed by label (sequence or mapping).
        title: Figure title.

    Returns:
        The path written, as a :class:`~pathlib.Path`.
    """
    x = _as_numpy(features)
    y = _as_numpy(labels)
    if x.ndim != 2:
        raise ValueError(f"features must have shape [N, D], got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"labels must have shape [{len(x)}] to match features, got {y.shape}")
    if len(x) < 2 or x.shape[1] < 2:
        raise ValueError(f"t-SNE needs at least 2 points of dim >= 2, got features {x.shape}")
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")

    keep = _subsample(len(x), max_points, seed)
    coords = _tsne_2d(x[keep].astype(np.float32), seed)
    y = y[keep].astype(np.int64)

    classes = np.unique(y)
    cmap_name = "tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "turbo"
    figure = Figure(figsize=(7, 6))
    axes = figure.add_subplot()
    colours = colormaps[cmap_name]
    for i, label in enumerate(classes):
        mask = y == label
        colour = colours(i if len(classes) <= 20 else i / max(len(classes) - 1, 1))
        axes.scatter(
            coords[mask, 0],
            coords[mask, 1],
            s=6,
            alpha=0.8,
            color=colour,
            label=_class_name(int(label), class_names),
        )
    axes.set_xticks([])
    axes.set_yticks([])
    if title:
        axes.set_title(title)
    axes.legend(
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize="small",
        markerscale=2,
        ncol=1 + len(classes) // 25,
        frameon=False,
    )
    return save_figure(figure, path)
