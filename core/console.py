"""What ``selfsup train`` shows on the terminal: a callback on the trainer's events.

The engine prints nothing; the command line attaches :class:`ConsoleReporter` (progress
bar, notices, evaluation lines). Library users attach it themselves if they want the same
output: ``trainer.add_callback(ConsoleReporter())``.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from .engine.events import Callback
from .engine.trainer import UNSIZED_TOTAL_STEPS


def format_results(results: dict[str, Any]) -> str:
    """``kNN acc 96.11%, linear acc 98.89%``."""
    parts = [f"kNN acc {100 * results['knn_acc']:.2f}%"]
    if "linear_acc" in results:
        parts.append(f"linear acc {100 * results['linear_acc']:.2f}%")
    return ", ".join(parts)


class ConsoleReporter(Callback):
    """Progress bar over the run's steps, notices, and one line per evaluation (main process only).

    progress: show the bar (``trainer.progress``); lines are printed either way.
    """

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress
        self.bar: tqdm | None = None

    def _write(self, text: str, file: Any = None) -> None:
        file = file or sys.stdout
        tqdm.write(text, file=file)  # above the progress bar
        file.flush()  # a log file sees each line as it happens

    def on_fit_start(self, trainer, resume):
        if not trainer.process.is_main:
            return
        self._write(f"run folder: {trainer.run_dir}" + (f" (resumed at step {trainer.global_step})" if resume else ""))
        if self.progress:
            total = None if trainer.total_steps >= UNSIZED_TOTAL_STEPS else trainer.total_steps
            self.bar = tqdm(total=total, initial=trainer.global_step, desc="train", dynamic_ncols=True,
                            mininterval=0.5, leave=False)

    def on_step(self, trainer, logs):
        if self.bar is not None:
            if self.bar.total != trainer.total_steps and trainer.total_steps < UNSIZED_TOTAL_STEPS:
                self.bar.total = trainer.total_steps
            self.bar.update(1)

    def on_log(self, trainer, row):
        if self.bar is not None:
            self.bar.set_postfix(epoch=f"{row['epoch']:.2f}", loss=f"{row['loss']:.4f}",
                                 img_s=f"{row['images_per_s']:.0f}", refresh=False)

    def on_evaluation(self, trainer, stage, result):
        if not trainer.process.is_main:
            return
        if stage == "before":
            self._write(f"random init: {format_results(result)}")
        elif stage == "during":
            self._write(f"step {result['step']} ({result['train_seconds'] / 60:.1f} min): "
                        f"kNN acc {100 * result['knn_acc']:.2f}%")
        else:
            self._write(f"trained:     {format_results(result)}")

    def on_message(self, trainer, level, text):
        if trainer.process.is_main:
            self._write(("WARNING: " if level == "warning" else "") + text, sys.stderr if level == "warning" else None)

    def on_end(self, trainer, result):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if not trainer.process.is_main:
            return
        if result.interrupted:
            self._write(f"stopped at step {result.steps}; resume with: selfsup train --resume {result.run_dir}")
        elif result.before and result.after:
            gain = 100 * (result.after["knn_acc"] - result.before["knn_acc"])
            self._write(f"kNN accuracy {100 * result.before['knn_acc']:.2f}% at random init -> "
                        f"{100 * result.after['knn_acc']:.2f}% trained ({gain:+.2f} points)")
