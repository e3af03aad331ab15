"""A metrics sink: the best value of each watched metric so far, in ``best.json``.

The shape of any third-party sink (Weights & Biases, MLflow, a database): subclass
``MetricsLogger``, register it as kind ``logger``, and list it in ``trainer.loggers``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from selfsup.interfaces import MetricsLogger


class BestMetricsLogger(MetricsLogger):
    """Keeps the best value (and its step) of each watched metric in ``best.json``.

    maximize / minimize: metric names where higher / lower is better (``knn_acc``; ``loss``).
    """

    def __init__(self, maximize: tuple[str, ...] = ("knn_acc",), minimize: tuple[str, ...] = ("loss",),
                 filename: str = "best.json") -> None:
        self.directions = {**{m: 1.0 for m in maximize}, **{m: -1.0 for m in minimize}}
        self.filename = filename
        self.path: Path | None = None
        self.best: dict[str, dict[str, float]] = {}

    def open(self, run_dir: Path, config: Mapping[str, Any], resume: bool) -> None:
        self.path = Path(run_dir) / self.filename
        self.best = json.loads(self.path.read_text()) if resume and self.path.exists() else {}

    def log(self, row: Mapping[str, Any], kind: str) -> None:
        changed = False
        for metric, sign in self.directions.items():
            value = row.get(metric)
            if value is None:
                continue
            held = self.best.get(metric)
            if held is None or sign * value > sign * held["value"]:
                self.best[metric] = {"value": float(value), "step": int(row["step"])}
                changed = True
        if changed:
            self.path.write_text(json.dumps(self.best, indent=2))
