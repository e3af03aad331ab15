"""One run of a study: train it in this process and record the outcome in ``result.json``.

``result.json`` holds ``status`` (``ok``, ``diverged``, ``collapsed``, ``crashed`` are
final; ``interrupted`` is not), ``message`` and the run's metrics (its ``study.csv`` row).
A run that raises :class:`~selfsup.errors.TrainingDiverged` is ``diverged``, one stopped by
the collapse monitor (:class:`~selfsup.errors.CollapseDetected`) ``collapsed``; any other
exception is ``crashed`` (traceback in ``error.txt``). The engine reports non-finite weights
as divergence wherever it meets them first (the loss check, or the monitor's probe embeddings).
A collapse flagged without stopping is ``ok`` with ``collapsed`` true and the step.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine import EVAL_BEFORE_NAME, METRICS_JSON, build_trainer
from ..errors import CollapseDetected, SelfsupError, TrainingDiverged

if TYPE_CHECKING:  # pragma: no cover
    from .plan import PlannedRun

RESULT_NAME = "result.json"
FINAL_STATUSES = ("ok", "diverged", "collapsed", "crashed")


@dataclass
class RunRecord:
    """What ``result.json`` holds for one run (the metrics of its ``study.csv`` row).

    Accuracies are fractions in [0, 1]; None where not measured (``knn_init`` without
    ``trainer.eval_before``, ``linear`` without ``eval.linear_probe``, metrics of a run that
    stopped early). curve: ``[{step, epoch, minutes, knn_acc}]`` from evaluation during training.
    """

    status: str
    message: str = ""
    knn_init: float | None = None
    linear_init: float | None = None
    knn: float | None = None
    linear: float | None = None
    effective_rank: float | None = None
    embedding_std: float | None = None
    alignment: float | None = None
    uniformity: float | None = None
    collapsed: bool | None = None
    collapse_step: int | None = None
    steps: int | None = None
    images_per_s: float | None = None
    train_seconds: float | None = None
    wall_seconds: float | None = None
    curve: list[dict[str, float]] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, node: dict[str, Any]) -> "RunRecord":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in node.items() if k in known})


def read_record(run_dir: Path) -> RunRecord | None:
    """The ``result.json`` in ``run_dir``, or None (missing or unreadable)."""
    path = Path(run_dir) / RESULT_NAME
    if not path.is_file():
        return None
    try:
        return RunRecord.from_json(json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def _mean_images_per_s(run_dir: Path) -> float | None:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    values = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row.get("images_per_s"), (int, float)):
            values.append(float(row["images_per_s"]))
    return sum(values) / len(values) if values else None


def _monitor_fields(monitor: dict[str, Any] | None) -> dict[str, Any]:
    monitor = monitor or {}
    values = monitor.get("values") or {}
    collapse = monitor.get("collapse")
    return {
        "effective_rank": values.get("effective_rank"),
        "embedding_std": values.get("embedding_std"),
        "alignment": values.get("alignment"),
        "uniformity": values.get("uniformity"),
        "collapsed": bool(collapse) if monitor else None,
        "collapse_step": collapse.get("step") if collapse else None,
    }


def _live_monitor(trainer: Any) -> dict[str, Any] | None:
    """The trainer's monitor as a summary dict (for runs that stopped with an error)."""
    monitor = getattr(trainer, "monitor", None)
    if monitor is None:
        return None
    collapse = getattr(monitor, "collapse", None)
    return {"values": dict(getattr(monitor, "last_values", {}) or {}),
            "collapse": asdict(collapse) if collapse is not None else None}


def _record_from_result(result: Any) -> RunRecord:
    """A record of a finished fit; reads :class:`FitResult` fields tolerantly, then ``metrics.json``."""
    summary = _read_json(Path(result.run_dir) / METRICS_JSON)
    before = getattr(result, "before", None) or summary.get("before") or {}
    after = getattr(result, "after", None) or summary.get("after") or {}
    monitor = getattr(result, "monitor", None) or summary.get("monitor")
    images_per_s = getattr(result, "images_per_s", None) or summary.get("images_per_s")
    return RunRecord(
        status="ok",
        knn_init=before.get("knn_acc"), linear_init=before.get("linear_acc"),
        knn=after.get("knn_acc"), linear=after.get("linear_acc"),
        steps=getattr(result, "steps", None),
        images_per_s=images_per_s or _mean_images_per_s(Path(result.run_dir)),
        train_seconds=getattr(result, "train_seconds", None) or summary.get("train_seconds") or None,
        curve=list(getattr(result, "curve", None) or summary.get("curve") or []),
        **_monitor_fields(monitor),
    )


def _record_from_error(status: str, exc: BaseException, trainer: Any, run_dir: Path) -> RunRecord:
    before = _read_json(run_dir / EVAL_BEFORE_NAME)
    message = str(exc) if isinstance(exc, SelfsupError) else f"{type(exc).__name__}: {exc}"
    return RunRecord(
        status=status, message=" ".join(message.split()),
        knn_init=before.get("knn_acc"), linear_init=before.get("linear_acc"),
        steps=getattr(trainer, "global_step", None) if trainer is not None else None,
        images_per_s=_mean_images_per_s(run_dir),
        **_monitor_fields(_live_monitor(trainer)),
    )


def write_record(run_dir: Path, record: RunRecord) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / (RESULT_NAME + ".tmp")
    tmp.write_text(json.dumps(record.to_json(), indent=2))
    os.replace(tmp, run_dir / RESULT_NAME)


def execute_run(run: PlannedRun, threads: int | None = None) -> RunRecord:
    """Train one run in this process and write its ``result.json``; returns the record.

    Resumes from the folder's checkpoint when there is one (a folder without a checkpoint
    holds nothing to continue and starts afresh). A stop request (SIGINT/SIGTERM) gives an
    ``interrupted`` record; a second SIGINT (KeyboardInterrupt) is recorded the same way and
    raised again.
    """
    if threads:
        import torch

        torch.set_num_threads(threads)
    previous = run.read_record()
    resume = run.state() == "resume"
    if not resume and run.run_dir.exists():
        shutil.rmtree(run.run_dir)
    earlier = (previous.wall_seconds or 0.0) if (resume and previous is not None) else 0.0
    start = time.perf_counter()
    trainer = None
    try:
        trainer = build_trainer(run.config, run_dir=run.run_dir)
        result = trainer.fit(resume=resume)
    except TrainingDiverged as exc:
        record = _record_from_error("diverged", exc, trainer, run.run_dir)
    except CollapseDetected as exc:
        record = _record_from_error("collapsed", exc, trainer, run.run_dir)
        record.collapsed = True
    except KeyboardInterrupt:
        record = RunRecord(status="interrupted", message="interrupted (KeyboardInterrupt) without a new checkpoint",
                           wall_seconds=earlier + time.perf_counter() - start)
        write_record(run.run_dir, record)
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of one run is a result; the study goes on
        record = _record_from_error("crashed", exc, trainer, run.run_dir)
        run.run_dir.mkdir(parents=True, exist_ok=True)
        (run.run_dir / "error.txt").write_text(traceback.format_exc())
    else:
        if result.interrupted:
            record = RunRecord(status="interrupted", message=f"stopped at step {result.steps}; a checkpoint "
                               "is kept and the next run of the study resumes it", steps=result.steps)
        else:
            record = _record_from_result(result)
    record.wall_seconds = earlier + time.perf_counter() - start
    write_record(run.run_dir, record)
    return record
