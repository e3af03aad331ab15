"""Metrics of a run: ``metrics.csv`` and ``metrics.jsonl`` (TensorBoard too when installed)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

METRICS_CSV = "metrics.csv"
METRICS_JSONL = "metrics.jsonl"


class RunLogger:
    """Appends one row per logging interval. CSV columns are fixed by the first row."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self._columns: list[str] | None = None
        self._writer = None
        if enabled and (run_dir / METRICS_CSV).exists():
            with open(run_dir / METRICS_CSV, newline="") as f:
                self._columns = next(csv.reader(f), None)
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(run_dir / "tensorboard"))
            except Exception:  # tensorboard is optional
                self._writer = None

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.run_dir / METRICS_JSONL, "a") as f:
            f.write(json.dumps(row) + "\n")
        new_file = self._columns is None
        if new_file:
            self._columns = list(row)
        with open(self.run_dir / METRICS_CSV, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        if self._writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._writer.add_scalar(key, value, row.get("step", 0))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    """All rows of ``metrics.jsonl`` (empty if none)."""
    path = run_dir / METRICS_JSONL
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
