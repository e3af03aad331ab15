"""Training events: what the trainer tells the outside world instead of printing.

The trainer prints nothing. It calls the methods of every :class:`Callback` attached with
``Trainer.add_callback`` at fixed moments; the command line attaches a console reporter
(progress bar, result lines), a study attaches its own. Override only the methods you need:
the defaults do nothing.

Order within one ``fit``: ``on_fit_start`` -> [``on_evaluation('before')``] -> per step
``on_step`` (and ``on_log`` every ``trainer.log_every`` steps, ``on_evaluation('during')``
at ``eval.every_*``, ``on_checkpoint`` after each write) -> [``on_evaluation('after')``]
-> ``on_end``. ``on_message`` carries notices and warnings at any time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from .trainer import FitResult, Trainer

Stage = Literal["before", "during", "after"]
Level = Literal["info", "warning"]


class Callback:
    """Receives the trainer's events (every method optional). Runs on every process; check
    ``trainer.process.is_main`` for what only one process should do."""

    def on_fit_start(self, trainer: "Trainer", resume: bool) -> None:
        """Before the first step (after the checkpoint is loaded when resuming)."""

    def on_step(self, trainer: "Trainer", logs: dict[str, Any]) -> None:
        """After each optimiser step; ``logs`` holds the step's values as tensors (no sync)."""

    def on_log(self, trainer: "Trainer", row: dict[str, Any]) -> None:
        """A metrics row: step, epoch, train_seconds, lr, the means of the step logs since
        the last row, images_per_s and any monitor diagnostics."""

    def on_evaluation(self, trainer: "Trainer", stage: Stage, result: dict[str, Any]) -> None:
        """kNN (and linear-probe) results: at random init (``before``), at ``eval.every_*``
        during training (``during``: a row with step, epoch, train_seconds, knn_acc), and
        after training (``after``)."""

    def on_checkpoint(self, trainer: "Trainer", path: "Path") -> None:
        """A checkpoint was written to ``path``."""

    def on_message(self, trainer: "Trainer", level: Level, text: str) -> None:
        """A notice (``info``) or a warning (collapse detected, stop requested)."""

    def on_end(self, trainer: "Trainer", result: "FitResult") -> None:
        """``fit`` is about to return ``result`` (also when interrupted)."""


class Callbacks(Callback):
    """Fans every event out to a list of callbacks, in the order they were added."""

    def __init__(self) -> None:
        self.items: list[Callback] = []

    def add(self, callback: Callback) -> None:
        if not isinstance(callback, Callback):
            raise TypeError(f"callbacks must subclass selfsup.engine.Callback, got {type(callback).__name__}")
        self.items.append(callback)

    def on_fit_start(self, trainer, resume):
        for c in self.items:
            c.on_fit_start(trainer, resume)

    def on_step(self, trainer, logs):
        for c in self.items:
            c.on_step(trainer, logs)

    def on_log(self, trainer, row):
        for c in self.items:
            c.on_log(trainer, row)

    def on_evaluation(self, trainer, stage, result):
        for c in self.items:
            c.on_evaluation(trainer, stage, result)

    def on_checkpoint(self, trainer, path):
        for c in self.items:
            c.on_checkpoint(trainer, path)

    def on_message(self, trainer, level, text):
        for c in self.items:
            c.on_message(trainer, level, text)

    def on_end(self, trainer, result):
        for c in self.items:
            c.on_end(trainer, result)
