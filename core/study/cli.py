"""``selfsup study STUDY.yaml``: run a study and print one line per run start and end.

    selfsup study STUDY.yaml [--out DIR] [--jobs N] [--steps S | --minutes M] [--dry-run]

The only place of the study package that prints.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - the runner (engine, torch) loads when a study runs
    from .execute import RunRecord
    from .runner import StudyEvent

#: Exit code of an interrupted study (as for SIGINT); the runner's EXIT_INTERRUPTED.
EXIT_INTERRUPTED = 130

DESCRIPTION = (
    "Run every variant x seed of a study file in its own run folder under the study folder, one after "
    "another (--jobs N: N at once); record crashes, divergence and collapse as results; write study.csv, "
    "study.md and study.png. Running the same command again skips finished runs and resumes an "
    "interrupted one; a variant whose resolved pipeline changed runs again in a new folder."
)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _describe(record: "RunRecord") -> str:
    parts = [record.status]
    if record.knn is not None:
        parts.append(f"kNN {_percent(record.knn)}")
    if record.linear is not None:
        parts.append(f"linear {_percent(record.linear)}")
    if record.collapsed:
        parts.append(f"collapse flagged at step {record.collapse_step}")
    if record.steps is not None:
        parts.append(f"{record.steps} steps")
    if record.wall_seconds is not None:
        parts.append(f"{record.wall_seconds:.0f} s")
    text = ", ".join(parts)
    if record.message and record.status != "ok":
        text += f" - {record.message}"
    return text


def print_event(event: "StudyEvent") -> None:
    if event.kind == "validate":
        print(f"validating {event.total} run(s) ...", flush=True)
        return
    assert event.run is not None
    prefix = f"[{event.index}/{event.total}] {event.run.label}"
    if event.kind == "skip":
        print(f"{prefix}: done earlier ({_describe(event.record)})" if event.record else f"{prefix}: done earlier",
              flush=True)
    elif event.kind == "start":
        print(f"{prefix}: {'resume' if event.resume else 'start'} -> {event.run.run_dir}", flush=True)
    elif event.kind == "end" and event.record is not None:
        print(f"{prefix}: {_describe(event.record)}", flush=True)


def _cmd_study(args: argparse.Namespace) -> int:
    from ..plugin_commands import warn_plugin_failures
    from .plan import default_out_dir, plan_study, validate_runs
    from .runner import run_one, run_study
    from .spec import load_study

    spec = load_study(args.study, steps=args.steps, minutes=args.minutes)
    out_dir = Path(args.out) if args.out else default_out_dir(spec)
    if args.run:  # a --jobs worker: one run, in this process, quietly
        threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or None
        record = run_one(spec, out_dir, args.run, threads=threads)
        return EXIT_INTERRUPTED if record.status == "interrupted" else 0
    warn_plugin_failures()
    if args.dry_run:
        runs = plan_study(spec, out_dir)
        validate_runs([r for r in runs if r.state() != "done"], spec)
        print(f"study {spec.name}: {len(runs)} run(s), budget {spec.budget.describe()}, folder {out_dir}")
        for run in runs:
            state = run.state()
            record = run.read_record()
            detail = f"done ({_describe(record)})" if state == "done" and record else state
            print(f"  {run.key:<{max(len(r.key) for r in runs)}}  {detail}")
        return 0
    outcome = run_study(spec, out_dir, jobs=args.jobs, on_event=print_event)
    print(f"table: {outcome.report['markdown']}\ncsv:   {outcome.report['csv']}\nplot:  {outcome.report['plot']}")
    if "heatmap" in outcome.report:
        print(f"heatmap: {outcome.report['heatmap']}")
    if outcome.interrupted:
        print(f"interrupted: {outcome.finished} of {len(outcome.runs)} run(s) finished. Run the same command "
              "again to resume.")
        return EXIT_INTERRUPTED
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``study`` subcommand on the top-level CLI."""
    parser = subparsers.add_parser("study", help="run a study (variants x seeds) and tabulate it",
                                   description=DESCRIPTION,
                                   epilog="Example: selfsup study examples/studies/collapse_simsiam.yaml")
    parser.add_argument("study", metavar="STUDY", help="study file (YAML)")
    parser.add_argument("--out", metavar="DIR", help="study folder (default: runs/studies/<name>)")
    parser.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                        help="runs at once, each in its own process with cpu_count/N threads (default 1: in "
                             "this process)")
    parser.add_argument("--steps", type=_positive_int, metavar="S",
                        help="budget of every run in optimiser steps, instead of the study's (new run folders)")
    parser.add_argument("--minutes", type=_positive_float, metavar="M",
                        help="budget of every run in training minutes, instead of the study's (new run folders)")
    parser.add_argument("--dry-run", action="store_true", help="validate and list the runs with their status")
    parser.add_argument("--run", metavar="KEY", help=argparse.SUPPRESS)  # a --jobs worker's one run
    parser.set_defaults(func=_cmd_study)
    return parser
