"""``metrics.csv``, ``metrics.jsonl`` and TensorBoard event files of a run folder."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from selfsup.interfaces import MetricsLogger


class JsonlLogger(MetricsLogger):
    """One JSON object per row in ``metrics.jsonl`` with its ``kind`` (train or eval)."""

    def __init__(self, filename: str = "metrics.jsonl") -> None:
        self.filename = filename
        self.path: Path | None = None

    def open(self, run_dir: Path, config: Mapping[str, Any], resume: bool) -> None:
        self.path = Path(run_dir) / self.filename

    def log(self, row: Mapping[str, Any], kind: str) -> None:
        assert self.path is not None, "JsonlLogger.log before open"
        with open(self.path, "a") as f:
            f.write(json.dumps({"kind": kind, **row}) + "\n")


class CsvLogger(MetricsLogger):
    """One line per row in ``metrics.csv``; the first column is ``kind`` (train or eval).

    Training and evaluation rows have different columns: the header is the union of every
    column seen so far, and a row that brings a new column rewrites the file once with the
    wider header (rows without a value leave the cell empty).
    """

    def __init__(self, filename: str = "metrics.csv") -> None:
        self.filename = filename
        self.path: Path | None = None
        self.columns: list[str] = []

    def open(self, run_dir: Path, config: Mapping[str, Any], resume: bool) -> None:
        self.path = Path(run_dir) / self.filename
        self.columns = []
        if self.path.exists():
            with open(self.path, newline="") as f:
                self.columns = next(csv.reader(f), [])

    def log(self, row: Mapping[str, Any], kind: str) -> None:
        assert self.path is not None, "CsvLogger.log before open"
        row = {"kind": kind, **row}
        new = [c for c in row if c not in self.columns]
        if new:
            self._widen(self.columns + new)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns).writerow(row)

    def _widen(self, columns: list[str]) -> None:
        rows: list[dict[str, str]] = []
        if self.path.exists() and self.columns:
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
        self.columns = columns
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)


class TensorBoardLogger(MetricsLogger):
    """Scalars in ``tensorboard/`` (evaluation rows under ``eval/``), when the ``tensorboard``
    package is installed; without it this logger writes nothing."""

    def __init__(self, subdir: str = "tensorboard") -> None:
        self.subdir = subdir
        self.writer = None

    def open(self, run_dir: Path, config: Mapping[str, Any], resume: bool) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional dependency
            return
        self.writer = SummaryWriter(str(Path(run_dir) / self.subdir))

    def log(self, row: Mapping[str, Any], kind: str) -> None:
        if self.writer is None:
            return
        prefix = "eval/" if kind == "eval" else ""
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(prefix + key, value, row.get("step", 0))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
