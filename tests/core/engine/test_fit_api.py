"""The trainer's public API: events instead of prints, minutes budgets, evaluation during
training, logger components, and the rule that nothing outside the engine drives its privates."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from support import RecordingCallback, tiny_pipeline

from selfsup.config import load_pipeline
from selfsup.engine import build_trainer
from selfsup.engine.budget import CALIBRATION_STEPS, EvaluationTimes, MinutesBudget
from selfsup.errors import ConfigError
from selfsup.interfaces import MetricsLogger

ROOT = Path(__file__).resolve().parents[3]


def trainer_for(tmp_path, registry, **overrides):
    return build_trainer(OmegaConf.create(tiny_pipeline(tmp_path, **overrides)), registry, run_dir=tmp_path / "run")


def test_fit_prints_nothing_and_reports_through_events(tmp_path, registry, capfd):
    trainer = trainer_for(tmp_path, registry, trainer__eval_before=True, trainer__eval_after=True,
                          trainer__max_steps=None, trainer__epochs=2, eval__every_epochs=1)
    events = RecordingCallback()
    result = trainer.add_callback(events).fit()
    assert capfd.readouterr() == ("", "")  # library use: not a character on stdout or stderr
    names = events.names()
    assert names[0] == "fit_start" and names[1] == "evaluation_before" and names[-1] == "end"
    # 28 steps per epoch of 64: evaluation after epoch 1 only (epoch 2 ends the run: the final evaluation)
    assert names.count("evaluation_during") == 1 and names.count("evaluation_after") == 1
    assert names.index("evaluation_during") < names.index("evaluation_after")
    assert events.events[-1][1] is result and result.steps == trainer.steps_per_epoch * 2
    assert [step for name, step in events.events if name == "checkpoint"] == [trainer.steps_per_epoch, result.steps]
    # the curve runs from random init through the periodic evaluation to the end
    assert [p["step"] for p in result.curve] == [0, trainer.steps_per_epoch, result.steps]
    assert result.curve[0]["knn_acc"] == result.before["knn_acc"] and result.curve[-1]["knn_acc"] == result.after["knn_acc"]
    assert 0 < result.curve[1]["minutes"] <= result.curve[2]["minutes"] == pytest.approx(result.train_seconds / 60)
    assert result.eval_seconds > 0 and result.images_per_s > 0 and result.epochs == 2.0
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["steps"] == result.steps and saved["curve"] == result.curve and saved["after"] == result.after


def test_evaluation_rows_join_the_metrics_files(tmp_path, registry):
    trainer = trainer_for(tmp_path, registry, trainer__max_steps=None, trainer__epochs=2, eval__every_epochs=1,
                          eval__plots=True, trainer__eval_after=True)
    trainer.fit()
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert len(evals) == 1 and evals[0]["step"] == trainer.steps_per_epoch and evals[0]["epoch"] == 1.0
    assert 0 < evals[0]["train_seconds"] and 0 < evals[0]["eval_seconds"] and 0 <= evals[0]["knn_acc"] <= 1
    assert all("train_seconds" in r for r in rows if r["kind"] == "train")
    with open(run / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert table[0].keys() >= {"kind", "step", "loss", "knn_acc", "eval_seconds"}  # the header widened once
    assert [r["kind"] for r in table] == [r["kind"] for r in rows]
    assert float([r for r in table if r["kind"] == "eval"][0]["knn_acc"]) == pytest.approx(evals[0]["knn_acc"])
    assert (run / "knn_curve.png").stat().st_size > 1000 and (run / "loss.png").exists()


def test_minutes_budget_sizes_the_schedule_and_excludes_evaluation(tmp_path, registry):
    budget_minutes = 0.05  # 3 s of training
    trainer = trainer_for(tmp_path, registry, trainer__max_steps=None, trainer__epochs=None,
                          trainer__max_minutes=budget_minutes, eval__every_minutes=0.01, data__batch_size=32)
    events = RecordingCallback()
    result = trainer.add_callback(events).fit()
    # it ends when the budget is spent, or at the end of the schedule sized to it
    assert result.train_seconds <= 60 * budget_minutes + 1.0
    assert result.train_seconds >= 60 * budget_minutes or result.steps == trainer.total_steps
    sized = [m for m in events.messages["info"] if "the schedule is sized to" in m]
    assert sized, events.messages
    assert trainer.total_steps < 10**9  # sized from the measured pace, not the provisional length
    # evaluation ran several times; its time is reported apart and did not eat the budget
    assert len([p for p in result.curve]) >= 2 and result.eval_seconds > 0
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["progress"]["train_seconds"] == pytest.approx(result.train_seconds, abs=0.5)
    assert state["progress"]["total_steps"] == trainer.total_steps


def test_minutes_budget_estimates_from_the_pace():
    budget = MinutesBudget(minutes=1.0, step_limit=None, start_step=0, start_seconds=0.0)
    assert budget.resize(1, 0.5) is None and budget.resize(2, 1.0) is None  # warm-up steps: origin at step 2
    assert budget.resize(2 + CALIBRATION_STEPS - 1, 5.0) is None
    # 10 steps in 5 s after the origin: 2 steps/s, 54 s left -> 12 + 108 (6 s is also the 10% mark)
    assert budget.resize(2 + CALIBRATION_STEPS, 6.0) == 12 + 108
    assert budget.resize(13, 6.5) is None and budget.resize(30, 11.9) is None  # next estimate at 20%
    assert budget.resize(60, 30.0) == 60 + 60  # at 50%: 58 steps in 29 s after the origin (2/s), 30 s left
    capped = MinutesBudget(minutes=1.0, step_limit=50, start_step=0, start_seconds=0.0)
    capped.resize(2, 1.0)
    assert capped.resize(12, 2.0) == 50  # trainer.epochs / max_steps still bound the run
    resumed = MinutesBudget(minutes=1.0, step_limit=None, start_step=100, start_seconds=40.0)
    assert resumed._fractions == [0.7, 0.8, 0.9]  # the estimates up to 60% were made before the stop
    assert budget.exhausted(60.0) and not budget.exhausted(59.9)


def test_evaluation_times_every_epochs_and_minutes():
    times = EvaluationTimes(every_epochs=2, every_minutes=None, start_seconds=0.0)
    assert [times.due_after_epoch(e) for e in (1, 2, 3, 4)] == [False, True, False, True] and not times.due(99.0)
    times = EvaluationTimes(every_epochs=None, every_minutes=1.0, start_seconds=0.0)
    assert not times.due(59.0) and times.due(60.0) and not times.due(61.0) and not times.due_after_epoch(1)
    assert times.due(250.0) and times.next_seconds == 300.0  # several intervals missed: one evaluation
    assert EvaluationTimes(None, 1.0, start_seconds=130.0).next_seconds == 180.0  # resumed at 130 s


@pytest.mark.parametrize("override, message", [
    ("trainer.max_minutes=0", "trainer.max_minutes: must be > 0, got 0"),
    ("trainer.max_minutes=-5", "trainer.max_minutes: must be > 0, got -5"),
    ("eval.every_minutes=0", "eval.every_minutes: must be > 0, got 0"),
    ("eval.every_epochs=0", "eval.every_epochs: must be >= 1, got 0"),
    ("trainer.epochs=0", "trainer.epochs: must be >= 1, got 0"),
    ("trainer.max_steps=-1", "trainer.max_steps: must be >= 1, got -1"),
    ("trainer.log_every=0", "trainer.log_every: must be >= 1, got 0"),
    ("trainer.max_minutes=abc", "trainer.max_minutes: expected"),
    ("trainer.epochs=null", "trainer.epochs: null (no epoch limit) needs trainer.max_steps or trainer.max_minutes"),
    ("trainer.loggers=[csv,wandb]", "trainer.loggers.1.name: unknown logger 'wandb'"),
])
def test_budget_and_evaluation_keys_are_validated(tmp_path, registry, override, message):
    path = tmp_path / "p.yaml"
    OmegaConf.save(OmegaConf.create(tiny_pipeline(tmp_path, trainer__max_steps=None)), path)
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_trainer(load_pipeline(path, [override]), registry, run_dir=tmp_path / "run")


class ListLogger(MetricsLogger):
    """Keeps rows in memory (a third-party sink would send them elsewhere)."""

    def __init__(self):
        self.rows, self.opened, self.closed = [], None, False

    def open(self, run_dir, config, resume):
        self.opened = (Path(run_dir), config["objective"]["name"], resume)

    def log(self, row, kind):
        self.rows.append((kind, dict(row)))

    def close(self):
        self.closed = True


def test_loggers_are_components_chosen_in_the_pipeline(tmp_path, registry):
    trainer = trainer_for(tmp_path, registry, trainer__loggers=["jsonl"])
    trainer.fit()
    assert (tmp_path / "run" / "metrics.jsonl").exists() and not (tmp_path / "run" / "metrics.csv").exists()
    sink = ListLogger()
    trainer = build_trainer(OmegaConf.create(tiny_pipeline(tmp_path)), registry, run_dir=tmp_path / "other")
    trainer.loggers.items = [sink]  # what build_trainer does with trainer.loggers from the registry
    trainer.fit()
    assert sink.opened == (tmp_path / "other", "moco", False) and sink.closed
    assert [(kind, row["step"]) for kind, row in sink.rows] == [("train", 2), ("train", 4), ("train", 6)]


def test_nothing_outside_the_engine_drives_the_trainer_through_private_members():
    pattern = re.compile(r"trainer\._[a-z]|\.global_step\s*[+\-]?=[^=]|\.epoch\s*[+\-]?=[^=]|\._step\(")
    offenders = []
    for folder in ("core", "plugins", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.parent == ROOT / "core" / "engine":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


class StopAt(RecordingCallback):
    """Requests a stop once the trainer reaches ``step`` (what SIGINT does)."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_step(self, trainer, logs):
        if trainer.global_step == self.step:
            trainer.request_stop()


def test_resume_keeps_the_clock_the_curve_and_the_collapse_step(tmp_path, registry):
    overrides = dict(trainer__max_steps=12, trainer__log_every=2, eval__every_epochs=None, trainer__eval_before=True,
                     monitor={"diagnostics": ["embedding_std"], "every": 2, "probe_size": 32, "collapse_std": 1.0})
    first = trainer_for(tmp_path, registry, **overrides)
    stopped = first.add_callback(StopAt(6)).fit()
    assert stopped.interrupted and stopped.steps == 6
    assert stopped.monitor is None and stopped.after is None
    second = trainer_for(tmp_path, registry, **overrides)
    events = RecordingCallback()
    result = second.add_callback(events).fit(resume=True)
    assert events.events[0] == ("fit_start", True) and result.steps == 12 and not result.interrupted
    assert result.train_seconds > stopped.train_seconds  # the clock went on from where it stopped
    assert result.curve[0] == stopped.curve[0] and result.curve[0]["step"] == 0  # random init, from the first part
    assert result.monitor["collapse"]["step"] == 2  # flagged before the stop, not again after it
    assert not events.messages["warning"]  # already flagged: no second warning
