"""A study's outputs: ``study.csv``, ``study.md`` and ``study.png``.

- ``study.csv``: one row per variant x seed (runs not yet run have status ``pending``).
- ``study.md``: one row per variant: mean ± std over seeds of every measured metric and the
  status counts.
- ``study.png``: left, the final metric per variant (mean over seeds, error bars ± std);
  right, kNN accuracy against minutes of training of every run that has a curve (two points
  or more: ``eval.every_minutes`` / ``eval.every_epochs``), one colour per variant.
- ``study_heatmap.png`` (variants and a grid both): variants x grid points coloured by the
  metric, ``C`` where the monitor flagged collapse; ``study.md`` gets the same as a table.

Every file is written to a temporary name and renamed, so a reader never sees half of one.
"""

from __future__ import annotations

import csv
import io
import math
import os
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..evaluation import save_figure
from .execute import RunRecord
from .plan import PlannedRun
from .spec import StudySpec, join_overrides

CSV_NAME = "study.csv"
MARKDOWN_NAME = "study.md"
PLOT_NAME = "study.png"
HEATMAP_NAME = "study_heatmap.png"
CSV_COLUMNS = ("variant", "seed", "status", "knn_init", "linear_init", "knn", "linear", "effective_rank",
               "embedding_std", "alignment", "uniformity", "collapsed", "collapse_step", "steps", "images_per_s",
               "train_seconds", "wall_seconds", "overrides", "run_dir")
METRIC_LABELS = {"knn_acc": "kNN accuracy (%)", "linear_acc": "linear-probe accuracy (%)"}


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def study_rows(runs: Sequence[PlannedRun], records: Mapping[str, RunRecord]) -> list[dict[str, Any]]:
    """The CSV rows as dicts, in plan order (variant, then seed)."""
    rows = []
    for run in runs:
        record = records.get(run.key) or RunRecord(status="pending")
        row = {"variant": run.variant, "seed": run.seed, "overrides": join_overrides(run.overrides),
               "run_dir": str(run.run_dir)}
        for column in CSV_COLUMNS:
            if column not in row:
                row[column] = getattr(record, column)
        rows.append(row)
    return rows


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row[c]) for c in CSV_COLUMNS])
    return _write_text(path, buffer.getvalue())


# --------------------------------------------------------------------------- markdown
def _values(rows: Sequence[Mapping[str, Any]], column: str) -> list[float]:
    return [float(r[column]) for r in rows if isinstance(r.get(column), (int, float)) and not isinstance(
        r.get(column), bool) and math.isfinite(float(r[column]))]


def mean_std(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    """``mean ± std`` (sample std) of ``values``; the value alone for one; empty for none."""
    if not values:
        return ""
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.fmean(values))} ± {fmt(statistics.stdev(values))}"


def _percent(x: float) -> str:
    return f"{100 * x:.2f}"


#: Markdown columns: header, CSV column, formatter.
SUMMARY_COLUMNS: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    ("kNN init %", "knn_init", _percent),
    ("kNN %", "knn", _percent),
    ("linear init %", "linear_init", _percent),
    ("linear %", "linear", _percent),
    ("eff. rank", "effective_rank", lambda x: f"{x:.2f}"),
    ("emb. std", "embedding_std", lambda x: f"{x:.4f}"),
    ("align.", "alignment", lambda x: f"{x:.3f}"),
    ("unif.", "uniformity", lambda x: f"{x:.3f}"),
    ("steps", "steps", lambda x: f"{x:.0f}"),
    ("img/s", "images_per_s", lambda x: f"{x:.0f}"),
    ("train min", "train_seconds", lambda x: f"{x / 60:.2f}"),
    ("wall min", "wall_seconds", lambda x: f"{x / 60:.2f}"),
)


def _collapse_cell(rows: Sequence[Mapping[str, Any]]) -> str:
    known = [r for r in rows if r.get("collapsed") is not None]
    if not known:
        return ""
    flagged = [r for r in known if r["collapsed"]]
    if not flagged:
        return "no"
    steps = ", ".join(str(r["collapse_step"]) for r in flagged if r.get("collapse_step") is not None)
    text = f"{len(flagged)}/{len(known)}" if len(known) > 1 else "yes"
    return f"{text} (step {steps})" if steps else text


def _status_cell(rows: Sequence[Mapping[str, Any]]) -> str:
    counts = Counter(r["status"] for r in rows)
    return ", ".join(f"{status} {n}" if len(rows) > 1 else status for status, n in counts.items())


def variant_groups(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["variant"], []).append(row)
    return groups


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per variant; columns with no value in any row are left out."""
    groups = variant_groups(rows)
    columns = [c for c in SUMMARY_COLUMNS if _values(rows, c[1])]
    header = ["variant", "runs", *(c[0] for c in columns), "collapsed"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for variant, group in groups.items():
        cells = [f"`{variant}`", _status_cell(group),
                 *(mean_std(_values(group, column), fmt) for _, column, fmt in columns), _collapse_cell(group)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def column_label(spec: StudySpec, column: str) -> str:
    """A grid point's name without its key when the grid has one key (``k=rbf(...)`` -> ``rbf(...)``)."""
    if len(spec.grid_keys) == 1 and column.startswith(spec.grid_keys[0] + "="):
        return column[len(spec.grid_keys[0]) + 1:]
    return column


def _pivot_cell(group: Sequence[Mapping[str, Any]], column: str) -> tuple[float | None, str]:
    """(mean metric in %, the text of a heatmap / pivot cell: value, ``C`` if collapse was
    flagged, or the status of runs without the metric)."""
    values = _values(group, column)
    if not values:
        return None, _status_cell(group) if group else ""
    mean = 100 * statistics.fmean(values)
    flagged = any(r.get("collapsed") for r in group)
    return mean, f"{mean:.1f}" + (" C" if flagged else "")


def pivot_table(spec: StudySpec, rows: Sequence[Mapping[str, Any]]) -> str:
    """Variants (rows) x grid points (columns): the metric's mean, ``C`` where collapse was flagged."""
    groups = variant_groups(rows)
    column = {"knn_acc": "knn", "linear_acc": "linear"}[spec.metric]
    header = ["variant", *(f"`{column_label(spec, c)}`" for c in spec.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in spec.rows:
        cells = [_pivot_cell(groups.get(f"{row}/{c}", []), column)[1] for c in spec.columns]
        lines.append("| " + " | ".join([f"`{row}`", *cells]) + " |")
    return "\n".join(lines)


def write_markdown(spec: StudySpec, rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    seeds = ", ".join(str(s) for s in spec.seeds)
    lines = [f"# Study `{spec.name}`", ""]
    if spec.description:
        lines += [spec.description, ""]
    lines += [
        f"Base pipeline `{spec.pipeline}`, budget {spec.budget.describe()} per run, seeds {seeds}"
        + (f", overrides `{join_overrides(spec.overrides)}`" if spec.overrides else "") + ".",
        f"Mean ± std over seeds; accuracies in %. Study file `{spec.path}`.",
        "",
        markdown_table(rows),
        "",
    ]
    if spec.rows and spec.columns:
        lines += [f"{METRIC_LABELS[spec.metric]} per variant and grid point (C: collapse flagged by the monitor):",
                  "", pivot_table(spec, rows), ""]
    failed = [r for r in rows if r["status"] in ("diverged", "collapsed", "crashed")]
    if failed:
        lines += ["Failed runs (messages in each run folder's `result.json`):", ""]
        lines += [f"- `{r['variant']}` seed {r['seed']}: {r['status']}" for r in failed]
        lines.append("")
    return _write_text(path, "\n".join(lines))


# --------------------------------------------------------------------------- plot
def write_plot(spec: StudySpec, rows: Sequence[Mapping[str, Any]],
               records: Mapping[str, RunRecord], runs: Sequence[PlannedRun], path: Path) -> Path:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    groups = variant_groups(rows)
    names = list(groups)
    colours = colormaps["tab10" if len(names) <= 10 else "tab20"]
    colour = {name: colours(i % colours.N) for i, name in enumerate(names)}
    column = {"knn_acc": "knn", "linear_acc": "linear"}[spec.metric]
    figure = Figure(figsize=(max(9.0, 5 + 0.6 * len(names)), 4.2))
    bars, curves = figure.subplots(1, 2)

    means, errors = [], []
    for name in names:
        values = [100 * v for v in _values(groups[name], column)]
        means.append(statistics.fmean(values) if values else 0.0)
        errors.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    positions = list(range(len(names)))
    # zoom on the measured range, with the random-init baseline as a dashed line
    measured = [m for name, m in zip(names, means) if _values(groups[name], column)]
    init = [100 * v for name in names for v in _values(groups[name], f"{column}_init")]
    floor = max(0.0, min(measured + init) - 5) if measured else 0.0
    if measured:
        bars.set_ylim(floor, min(100.0, max(m + e for m, e in zip(means, errors)) + 3))
    if init:
        bars.axhline(statistics.fmean(init), linestyle="--", color="black", linewidth=1, zorder=3)
        bars.annotate("random init", (0.99, statistics.fmean(init)), xycoords=("axes fraction", "data"),
                      fontsize=8, ha="right", va="bottom", zorder=3)
    heights = [m - floor if m else 0.0 for m in means]
    bars.bar(positions, heights, bottom=floor, yerr=errors if any(errors) else None, capsize=4,
             color=[colour[n] for n in names])
    for x, name, mean, error in zip(positions, names, means, errors):
        if not _values(groups[name], column):  # no finished run: say why instead of a bar
            bars.annotate(_status_cell(groups[name]), (x, floor), ha="center", va="bottom", rotation=90, fontsize=8)
        else:
            bars.annotate(f"{mean:.1f}", (x, mean + error), ha="center", va="bottom", fontsize=8,
                          xytext=(0, 2), textcoords="offset points")
    bars.set_xticks(positions, names, rotation=30, ha="right", fontsize=8)
    bars.set_ylabel(METRIC_LABELS[spec.metric])
    bars.set_title(f"final {spec.metric} per variant" + (" (± std over seeds)" if len(spec.seeds) > 1 else ""),
                   fontsize=10)
    bars.grid(axis="y", alpha=0.3)

    labelled: set[str] = set()
    for run in runs:
        record = records.get(run.key)
        points = [p for p in (record.curve if record else []) if "minutes" in p and p.get("knn_acc") is not None]
        if len(points) < 2:  # the final evaluation alone is no curve
            continue
        label = run.variant if run.variant not in labelled else None
        labelled.add(run.variant)
        curves.plot([p["minutes"] for p in points], [100 * p["knn_acc"] for p in points], color=colour[run.variant],
                    marker="o" if len(points) < 30 else None, markersize=3, label=label, linewidth=1.5)
    if labelled:
        curves.legend(fontsize=8)
    else:
        curves.text(0.5, 0.5, "no kNN curves\n(set eval.every_minutes or eval.every_epochs)",
                    ha="center", va="center", transform=curves.transAxes, fontsize=9, color="grey")
    curves.set_xlabel("training minutes")
    curves.set_ylabel("kNN accuracy (%)")
    curves.set_title("kNN accuracy during training", fontsize=10)
    curves.grid(alpha=0.3)
    figure.suptitle(f"study {spec.name}", fontsize=11)
    return save_figure(figure, path)


def _wrapped(label: str, width: int = 22) -> str:
    """A long tick label broken after its commas."""
    return label.replace(",", ",\n") if len(label) > width else label


def write_heatmap(spec: StudySpec, rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Variants x grid points coloured by the metric; ``C`` marks a flagged collapse, runs
    without the metric (diverged, crashed) are grey with their status."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    groups = variant_groups(rows)
    column = {"knn_acc": "knn", "linear_acc": "linear"}[spec.metric]
    cells = [[_pivot_cell(groups.get(f"{r}/{c}", []), column) for c in spec.columns] for r in spec.rows]
    values = [v for line in cells for v, _ in line if v is not None]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    colours = colormaps["viridis"]
    figure = Figure(figsize=(2.0 + 1.3 * len(spec.columns), 1.2 + 0.55 * len(spec.rows)))
    axes = figure.subplots()
    for i, line in enumerate(cells):
        for j, (value, text) in enumerate(line):
            shade = 0.5 if high == low else (value - low) / (high - low) if value is not None else None
            face = colours(shade) if shade is not None else (0.85, 0.85, 0.85, 1.0)
            axes.add_patch(Rectangle((j, i), 1, 1, facecolor=face, edgecolor="white"))
            ink = "white" if shade is not None and shade < 0.6 else "black"
            axes.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=8, color=ink,
                      fontweight="bold" if text.endswith(" C") else "normal")
    axes.set_xlim(0, len(spec.columns))
    axes.set_ylim(len(spec.rows), 0)
    axes.set_xticks([j + 0.5 for j in range(len(spec.columns))],
                    [_wrapped(column_label(spec, c)) for c in spec.columns], rotation=30, ha="right", fontsize=8)
    axes.set_yticks([i + 0.5 for i in range(len(spec.rows))], list(spec.rows), fontsize=8)
    if values:
        mappable = ScalarMappable(Normalize(low, high), colours)
        figure.colorbar(mappable, ax=axes, label=METRIC_LABELS[spec.metric], fraction=0.04)
    axes.set_title(f"study {spec.name}: {spec.metric} (C: collapse flagged; grey: no result)", fontsize=10)
    return save_figure(figure, path)


def write_report(spec: StudySpec, runs: Sequence[PlannedRun], records: Mapping[str, RunRecord],
                 out_dir: Path) -> dict[str, Path]:
    """Write ``study.csv``, ``study.md`` and ``study.png`` into ``out_dir``; their paths by kind."""
    rows = study_rows(runs, records)
    written = {
        "csv": write_csv(rows, out_dir / CSV_NAME),
        "markdown": write_markdown(spec, rows, out_dir / MARKDOWN_NAME),
        "plot": write_plot(spec, rows, records, runs, out_dir / PLOT_NAME),
    }
    if spec.rows and spec.columns:
        written["heatmap"] = write_heatmap(spec, rows, out_dir / HEATMAP_NAME)
    return written
