"""Studies: a base pipeline, variants and/or a grid, a budget and seeds, run as one command.

A study is data, not a script (``examples/studies/*.yaml``)::

    from selfsup.study import load_study, run_study

    outcome = run_study(load_study("examples/studies/collapse_simsiam.yaml"), jobs=1)
    outcome.report["markdown"]      # runs/studies/collapse_simsiam/study.md

- :mod:`~selfsup.study.spec`: the study file, validated (:func:`load_study`).
- :mod:`~selfsup.study.plan`: every variant x seed's pipeline, resolved, validated and keyed
  (its run folder).
- :mod:`~selfsup.study.execute`: one run, its outcome recorded in ``result.json``.
- :mod:`~selfsup.study.runner`: all runs, in this process or in workers; resumable
  (:func:`run_study`).
- :mod:`~selfsup.study.report`: ``study.csv``, ``study.md``, ``study.png``.
- :mod:`~selfsup.study.cli`: the ``selfsup study`` command (the only part that prints).

The package builds on the engine's public API (``build_trainer``, ``Trainer.fit``) and never
imports ``selfsup.plugins``.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the submodule that defines it; imported on first use, so the command line
#: (which registers ``selfsup study``) does not load the engine for every other command.
_EXPORTS = {
    "RunRecord": "execute", "execute_run": "execute",
    "PlannedRun": "plan", "plan_study": "plan", "validate_runs": "plan",
    "write_report": "report",
    "StudyEvent": "runner", "StudyOutcome": "runner", "run_study": "runner",
    "Budget": "spec", "StudySpec": "spec", "Variant": "spec", "load_study": "spec", "parse_study": "spec",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'selfsup.study' has no attribute {name!r}")


__all__ = [
    "Budget",
    "PlannedRun",
    "RunRecord",
    "StudyEvent",
    "StudyOutcome",
    "StudySpec",
    "Variant",
    "execute_run",
    "load_study",
    "parse_study",
    "plan_study",
    "run_study",
    "validate_runs",
    "write_report",
]
