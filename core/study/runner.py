"""Running a study: every variant x seed in its own run folder, resumable, failures recorded.

:func:`run_study` plans the runs (:mod:`~selfsup.study.plan`), validates every one that has
no final result before anything trains, then runs them one after another in this process,
or ``jobs`` at once in worker processes (``selfsup study STUDY --run KEY``), and rewrites
the report (:mod:`~selfsup.study.report`) after each. Running a study again skips runs with
a final result, resumes a run whose folder holds a checkpoint (``fit(resume=True)``) and
starts the others. A crashed run is final too: delete its folder to run it again.

The runner prints nothing: progress goes to an ``on_event`` callback (the CLI prints it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import ConfigError
from .execute import RESULT_NAME, RunRecord, execute_run, write_record
from .plan import PlannedRun, default_out_dir, plan_study, validate_runs
from .spec import StudySpec

EXIT_INTERRUPTED = 130


@dataclass
class StudyEvent:
    """A progress event: ``validate`` (before validation), ``skip`` (a run with a final
    result), ``start`` and ``end`` of a run (``record`` set at ``end`` and ``skip``)."""

    kind: Literal["validate", "skip", "start", "end"]
    index: int = 0
    total: int = 0
    run: PlannedRun | None = None
    record: RunRecord | None = None
    resume: bool = False


@dataclass
class StudyOutcome:
    """What :func:`run_study` returns."""

    out_dir: Path
    runs: list[PlannedRun]
    records: dict[str, RunRecord]
    interrupted: bool
    report: dict[str, Path]

    @property
    def finished(self) -> int:
        return sum(1 for r in self.records.values() if r.final)


EventCallback = Callable[[StudyEvent], None]


def run_one(spec: StudySpec, out_dir: Path, key: str, threads: int | None = None) -> RunRecord:
    """Execute the run whose folder name is ``key`` (what ``selfsup study --run KEY`` does in a
    ``--jobs`` worker process). Raises :class:`ConfigError` for an unknown key."""
    runs = {r.key: r for r in plan_study(spec, out_dir)}
    if key not in runs:
        raise ConfigError(f"--run {key}: no run of study {spec.name!r} has that folder name; "
                          f"runs: {', '.join(runs)}.")
    return execute_run(runs[key], threads=threads)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _StopRequests:
    """Counts SIGINT/SIGTERM while installed (main thread only) instead of raising."""

    def __init__(self) -> None:
        self.count = 0

    def set(self) -> None:
        self.count = max(self.count, 1)

    def is_set(self) -> bool:
        return self.count > 0

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            self.count += 1

        for s in previous:
            signal.signal(s, handler)
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


class _Study:
    """The state of one :func:`run_study` call."""

    def __init__(self, spec: StudySpec, out_dir: Path, runs: list[PlannedRun], on_event: EventCallback | None):
        self.spec, self.out_dir, self.runs = spec, out_dir, runs
        self.on_event = on_event or (lambda event: None)
        self.records: dict[str, RunRecord] = {}
        for run in runs:
            record = run.read_record()
            if record is not None:
                self.records[run.key] = record
        self.report: dict[str, Path] = {}

    def emit(self, kind: str, run: PlannedRun, record: RunRecord | None = None, resume: bool = False) -> None:
        self.on_event(StudyEvent(kind, run.index + 1, len(self.runs), run, record, resume))  # type: ignore[arg-type]

    def write_report(self) -> None:
        from .report import write_report

        self.report = write_report(self.spec, self.runs, self.records, self.out_dir)

    def finish(self, run: PlannedRun, record: RunRecord) -> None:
        self.records[run.key] = record
        self.emit("end", run, record)
        self.write_report()

    # ---------------------------------------------------------------- in-process
    def run_inline(self, todo: list[PlannedRun]) -> bool:
        """Run one after another in this process; True when interrupted."""
        for run in todo:
            self.emit("start", run, resume=run.state() == "resume")
            try:
                record = execute_run(run)
            except KeyboardInterrupt:
                self.records[run.key] = run.read_record() or RunRecord(status="interrupted")
                return True
            self.finish(run, record)
            if record.status == "interrupted":
                return True
        return False

    # ---------------------------------------------------------------- worker processes
    def _command(self, run: PlannedRun) -> list[str]:
        cmd = [sys.executable, "-m", "selfsup.cli", "study", str(self.spec.path), "--run", run.key,
               "--out", str(self.out_dir)]
        if self.spec.budget.steps is not None:
            cmd += ["--steps", str(self.spec.budget.steps)]
        if self.spec.budget.minutes is not None:
            cmd += ["--minutes", repr(self.spec.budget.minutes)]
        return cmd

    @staticmethod
    def _fresh(run: PlannedRun, since: float) -> bool:
        """Whether the run's ``result.json`` was written after ``since`` (by the worker just ended)."""
        path = run.run_dir / RESULT_NAME
        return path.is_file() and path.stat().st_mtime >= since - 1.0

    def run_workers(self, todo: list[PlannedRun], jobs: int) -> bool:
        """Run up to ``jobs`` runs at once, each in a ``selfsup study --run KEY`` process with
        ``cpu_count // jobs`` threads; True when interrupted. A stop request (SIGINT/SIGTERM)
        is passed on to every worker as SIGINT (each checkpoints its run and stops) and no new
        run starts; a second one is passed on too (the workers stop without a checkpoint)."""
        threads = str(max(1, _cpu_count() // jobs))
        env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        logs = self.out_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        pending, active, started = list(todo), {}, {}
        stop = _StopRequests()
        forwarded = 0
        with stop.installed():
            while active or (pending and not stop.is_set()):
                while pending and len(active) < jobs and not stop.is_set():
                    run = pending.pop(0)
                    self.emit("start", run, resume=run.state() == "resume")
                    started[run.key] = time.time()
                    with open(logs / f"{run.key}.log", "a") as log:
                        # a session of its own: a terminal's Ctrl-C reaches this process alone,
                        # which passes each stop request on exactly once
                        active[run.key] = (run, subprocess.Popen(self._command(run), stdout=log,
                                                                 stderr=subprocess.STDOUT, env=env,
                                                                 start_new_session=True))
                while forwarded < min(stop.count, 2):  # the first asks for a checkpoint, a second: stop now
                    for _, process in active.values():
                        if process.poll() is None:
                            process.send_signal(signal.SIGINT)
                    forwarded += 1
                for key, (run, process) in list(active.items()):
                    code = process.poll()
                    if code is None:
                        continue
                    del active[key]
                    record = run.read_record() if self._fresh(run, started[key]) else None
                    if record is None and stop.is_set():  # stopped before it could write one
                        record = RunRecord(status="interrupted", message="stopped before training started")
                    elif record is None:
                        record = RunRecord(status="crashed", message=f"the worker process exited with code "
                                           f"{code} without a result; see {logs / (run.key + '.log')}")
                        write_record(run.run_dir, record)
                    self.finish(run, record)
                    if record.status == "interrupted":
                        stop.set()
                if active:
                    time.sleep(0.1)
        return stop.is_set()


def run_study(
    spec: StudySpec,
    out_dir: Path | None = None,
    jobs: int = 1,
    on_event: EventCallback | None = None,
    validate: bool = True,
) -> StudyOutcome:
    """Validate every run, then run those without a final result; write the report after each.

    jobs: runs at once (1: one after another in this process; N > 1: worker processes).
    on_event: receives a :class:`StudyEvent` per run start and end (the CLI prints them).
    Returns the records of every run; ``interrupted`` when a stop request (SIGINT/SIGTERM)
    ended the study early: running it again resumes where it stopped.
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs: must be a positive integer, got {jobs!r}.")
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(spec)
    runs = plan_study(spec, out_dir)
    study = _Study(spec, out_dir, runs, on_event)
    todo = [r for r in runs if r.state() != "done"]
    if validate and todo:
        study.on_event(StudyEvent("validate", 0, len(todo)))
        validate_runs(todo, spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    for run in runs:
        if run.state() == "done":
            study.emit("skip", run, study.records.get(run.key))
    interrupted = False
    try:
        if jobs == 1 or len(todo) <= 1:
            interrupted = study.run_inline(todo)
        else:
            interrupted = study.run_workers(todo, jobs)
    except KeyboardInterrupt:
        interrupted = True
    study.write_report()
    return StudyOutcome(out_dir, runs, study.records, interrupted, study.report)
