"""Budgets of a run: the training clock, sizing the schedule to minutes, evaluation times.

Training time is wall time minus the pauses the trainer takes for evaluation, collapse
measurements and checkpoints, so ``trainer.max_minutes`` and ``eval.every_minutes`` count
what a method costs to train, not what it costs to watch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

#: Fractions of a minutes budget at which the schedule is re-sized from the measured pace
#: (the first steps run slower than the steady state; a shared machine's speed drifts, and a
#: schedule sized too short would end the run early).
RESIZE_AT = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Steps timed (after 2 warm-up steps) before the first estimate of a minutes budget.
CALIBRATION_STEPS = 10


class TrainingClock:
    """Seconds of training so far: ``offset`` (from earlier runs of a resumed run) plus wall
    time since construction, less the time spent inside :meth:`paused` blocks."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = float(offset)
        self._start = time.perf_counter()
        self._paused = 0.0
        self._stopped: float | None = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._paused += time.perf_counter() - start

    def stop(self) -> None:
        """Training is over: :meth:`seconds` stays where it is."""
        self._stopped = self.seconds()

    def seconds(self) -> float:
        if self._stopped is not None:
            return self._stopped
        return self.offset + time.perf_counter() - self._start - self._paused


class MinutesBudget:
    """Sizes a run to ``minutes`` of training: how many steps fit, re-estimated as it goes.

    step_limit: the steps allowed by ``trainer.epochs`` / ``trainer.max_steps`` (None: no
    limit); the estimate never exceeds it. Call :meth:`resize` after every step: it returns a
    new total number of steps when an estimate is due (after the calibration steps of this
    process, then at each :data:`RESIZE_AT` fraction not yet passed), else None.
    """

    def __init__(self, minutes: float, step_limit: int | None, start_step: int, start_seconds: float) -> None:
        self.seconds = 60.0 * minutes
        self.step_limit = step_limit
        self._origin: tuple[int, float] | None = None  # (step, seconds) after the warm-up steps
        self._start_step = start_step
        self._calibrated = False
        self._fractions = [f for f in RESIZE_AT if f * self.seconds > start_seconds]

    def exhausted(self, seconds: float) -> bool:
        return seconds >= self.seconds

    def resize(self, step: int, seconds: float) -> int | None:
        if self._origin is None:
            if step >= self._start_step + 2:
                self._origin = (step, seconds)
            return None
        due = not self._calibrated and step >= self._origin[0] + CALIBRATION_STEPS
        while self._fractions and seconds >= self._fractions[0] * self.seconds:
            self._fractions.pop(0)
            due = True
        if not due:
            return None
        self._calibrated = True
        pace = (step - self._origin[0]) / max(seconds - self._origin[1], 1e-9)  # steps per second
        total = step + int(max(self.seconds - seconds, 0.0) * pace)
        if self.step_limit is not None:
            total = min(total, self.step_limit)
        return max(total, step, 1)


class EvaluationTimes:
    """When to evaluate during training: every ``every_epochs`` epochs and/or every
    ``every_minutes`` minutes of training time (either may be None)."""

    def __init__(self, every_epochs: int | None, every_minutes: float | None, start_seconds: float) -> None:
        self.every_epochs = every_epochs
        self.every_seconds = None if every_minutes is None else 60.0 * every_minutes
        self.next_seconds = None
        if self.every_seconds is not None:
            self.next_seconds = (int(start_seconds // self.every_seconds) + 1) * self.every_seconds

    def due(self, seconds: float) -> bool:
        """Whether ``every_minutes`` of training time have passed since the last evaluation."""
        if self.next_seconds is None or seconds < self.next_seconds:
            return False
        while self.next_seconds <= seconds:  # several intervals missed: one evaluation
            self.next_seconds += self.every_seconds
        return True

    def due_after_epoch(self, finished_epochs: int) -> bool:
        """Whether to evaluate after ``finished_epochs`` epochs (``every_epochs``)."""
        return bool(self.every_epochs) and finished_epochs % self.every_epochs == 0
