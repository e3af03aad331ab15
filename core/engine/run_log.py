"""The metrics sinks of a run (``trainer.loggers``) and reading its rows back."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from ..errors import ConfigError, SelfsupError
from ..interfaces import MetricsLogger

METRICS_CSV = "metrics.csv"
METRICS_JSONL = "metrics.jsonl"


def build_loggers(registry: Any, nodes: Sequence[Union[str, Mapping[str, Any]]]) -> list[MetricsLogger]:
    """Build ``trainer.loggers`` (names or ``{name: ..., params}``) through the registry."""
    from ..config import build

    loggers: list[MetricsLogger] = []
    for i, node in enumerate(nodes):
        logger = build(registry, "logger", node, f"trainer.loggers.{i}")
        if not isinstance(logger, MetricsLogger):
            raise ConfigError(
                f"trainer.loggers.{i}: logger {node!r} built a {type(logger).__name__}, which is not a "
                "selfsup.interfaces.MetricsLogger."
            )
        loggers.append(logger)
    return loggers


class Loggers:
    """The run's sinks, fed by the trainer on the main process only.

    loggers: built sinks, or None to build ``nodes`` (``trainer.loggers``) through the
    default registry when the run starts (the core never imports the plugins that provide them).
    """

    def __init__(self, loggers: list[MetricsLogger] | None, nodes: Sequence[Any]) -> None:
        self.items = loggers
        self.nodes = list(nodes)
        self.opened = False

    def open(self, run_dir: Path, config: Mapping[str, Any], resume: bool) -> None:
        if self.items is None:
            from ..plugin_manager import default_registry

            self.items = build_loggers(default_registry(), self.nodes)
        for logger in self.items:
            logger.open(run_dir, config, resume)
        self.opened = True

    def log(self, row: Mapping[str, Any], kind: str) -> None:
        if self.opened:
            for logger in self.items or ():
                try:
                    logger.log(row, kind)
                except OSError as exc:  # a full disk, a folder made read-only mid-run
                    raise SelfsupError(
                        f"{type(logger).__name__} could not write the metrics of step {row.get('step')}: "
                        f"{exc.strerror or exc} ({exc.filename or 'its file'}). Training stopped; the last "
                        "checkpoint is kept: free the space and resume."
                    ) from None

    def close(self) -> None:
        if self.opened:
            for logger in self.items or ():
                logger.close()
        self.opened = False


def read_rows(run_dir: Path, kind: str = "train") -> list[dict[str, Any]]:
    """The rows of ``kind`` (train or eval) in ``metrics.jsonl`` (empty if none)."""
    path = Path(run_dir) / METRICS_JSONL
    if not path.exists():
        return []
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [r for r in rows if r.get("kind", "train") == kind]
