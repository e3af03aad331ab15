"""Built-in metrics sinks (registry kind ``logger``): ``csv``, ``jsonl``, ``tensorboard``."""

from __future__ import annotations

from selfsup.registry import Registry

from .sinks import CsvLogger, JsonlLogger, TensorBoardLogger


def register(registry: Registry) -> None:
    registry.register("logger", "csv", CsvLogger)
    registry.register("logger", "jsonl", JsonlLogger)
    registry.register("logger", "tensorboard", TensorBoardLogger)
