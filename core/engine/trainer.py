"""The training loop: a plain PyTorch loop, not a framework.

One step: batch -> views (augmented on the device) -> ``objective(batch)`` -> backward ->
optimiser and scheduler step -> ``objective.after_step`` (momentum update, enqueue).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from ..data import DataSplits, StreamedImages
from ..interfaces import ViewTransform
from ..errors import ConfigError, SelfsupError, TrainingDiverged
from ..interfaces import Batch, MetricsLogger, Objective
from ..profiling import phase
from . import checkpoint as ckpt
from .. import distributed
from .budget import EvaluationTimes, MinutesBudget, TrainingClock
from .device import to_channels_last, check_compiler, autocast_dtype, compile_encoders, select_device
from .evaluate import evaluate
from .events import Callback, Callbacks
from .host_memory import retain_freed_host_memory
from .loader import InMemoryBatches, StreamingBatches
from .monitor import Monitor
from .optim import build_optimizer, build_scheduler
from .run_folder import (CONFIG_NAME, EVAL_BEFORE_NAME, KNN_CURVE_NAME, METRICS_JSON, checkpoint_mismatch,
                         claim_run_dir)
from .run_log import Loggers, read_rows
from .settings import Settings

#: Optimiser settings of a parameter group that a resumed run with other ``optim.*`` values takes
#: from its configuration instead of the checkpoint.
OPTIMIZER_SETTINGS = ("lr", "initial_lr", "weight_decay", "momentum", "betas")
#: The provisional length of a run bounded by minutes alone, until its pace is measured.
UNSIZED_TOTAL_STEPS = 10**9


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns (and, as JSON, what ``metrics.json`` holds).

    before / after: evaluation at random init and after training (``knn_acc``, ``linear_acc``
    with ``eval.linear_probe``, ``feature_dim``), None when switched off or interrupted.
    curve: ``[{step, epoch, minutes, knn_acc}]`` from random init through ``eval.every_*``
    to the end (minutes of training time). monitor: the collapse monitor's last ``values``
    and its ``collapse`` event (None when not flagged), or None without a monitor.
    """

    run_dir: Path
    steps: int
    interrupted: bool
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    epochs: float = 0.0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    images_per_s: float = 0.0
    curve: list[dict[str, float]] = field(default_factory=list)
    monitor: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-ready fields (``metrics.json``)."""
        out = dataclasses.asdict(self)
        out["run_dir"] = str(self.run_dir)
        return out


#: The log line of a run whose data has no labels and no ``eval.data``.
NO_EVALUATION = ("evaluation skipped: the training data has no labelled held-out split; set eval.data to a labelled "
                 "dataset (e.g. eval.data={name: image_folder, root: labelled/}) for kNN accuracy. The monitor's "
                 "label-free diagnostics still run.")


#: ``Trainer(eval_data=...)``'s default: evaluate on the training data's labelled held-out split.
TRAINING_DATA = object()


class Trainer:
    """Trains ``objective`` on ``data.train`` and evaluates on ``data.test``.

    run_dir: where config, metrics, checkpoints, encoder export and plots go.
    config: the resolved pipeline (plain dict), saved as ``config.yaml`` for reproduction.

    Under ``torchrun`` (see :mod:`selfsup.distributed`) each process trains on its
    shard of every global batch of ``data.batch_size``; gradients of the objective's
    optimised parameters are averaged by DDP (momentum encoders are not wrapped); the
    augmentation generator and the global torch RNG differ per rank (seeded from ``seed``
    and the rank); rank 0 alone writes config, metrics, checkpoints (holding every rank's
    RNG state), the encoder export and evaluation results.

    The trainer prints nothing: it reports through the callbacks attached with
    :meth:`add_callback` (see :mod:`selfsup.engine.events`) and writes metrics rows to its
    loggers (``trainer.loggers``; ``loggers`` given here replaces them).

    Public API: :meth:`fit` (train within ``trainer.epochs`` / ``max_steps`` / ``max_minutes``,
    evaluate, return a :class:`FitResult`), :meth:`train_step` (one optimiser step),
    :meth:`evaluate_now`, :meth:`save_checkpoint` / :meth:`load_checkpoint`,
    :meth:`set_total_steps`, :meth:`request_stop`, :meth:`finish`.
    """

    def __init__(
        self,
        objective: Objective,
        data: DataSplits,
        transform: ViewTransform | None,
        settings: Settings,
        run_dir: Path,
        config: dict[str, Any] | None = None,
        diagnostics: dict[str, Any] | None = None,
        loggers: list[MetricsLogger] | None = None,
        eval_data: DataSplits | None | object = TRAINING_DATA,
    ) -> None:
        self.objective = objective
        self.data = data
        #: the labelled splits kNN reads (None: no labels anywhere, evaluation is skipped)
        self.eval_data = (data if data.has_labels else None) if eval_data is TRAINING_DATA else eval_data
        self.transform = transform
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.config = config or {}
        self.process, self.device = distributed.init_from_env(select_device(settings.trainer.device))
        self.run_dir = Path(distributed.broadcast_object(str(self.run_dir)))  # rank 0's name (it may hold a time)
        self._stop = threading.Event()
        if self.device.type == "cpu" and settings.trainer.retain_host_memory:
            retain_freed_host_memory()
        self.objective.to(self.device)
        self.memory_format = torch.channels_last if settings.trainer.channels_last else torch.contiguous_format
        if settings.trainer.channels_last:
            self.objective.to(memory_format=torch.channels_last)
        if settings.trainer.compile:
            check_compiler(self.device)
            compile_encoders(self.objective)
        self.loader = self._build_loader()
        self.steps_per_epoch = len(self.loader)
        tcfg = settings.trainer
        if tcfg.epochs is None and tcfg.max_steps is None and tcfg.max_minutes is None:
            raise ConfigError("trainer.epochs: null (no epoch limit) needs trainer.max_steps or trainer.max_minutes.")
        #: the steps that trainer.epochs and trainer.max_steps allow (None: no step limit)
        self.step_limit = min((n for n in (tcfg.max_steps, tcfg.epochs and tcfg.epochs * self.steps_per_epoch)
                               if n is not None), default=None)
        self.total_steps = self.step_limit if self.step_limit is not None else UNSIZED_TOTAL_STEPS
        self.optimizer = build_optimizer(objective.parameter_groups(), settings.optim, settings.data.batch_size)
        self.model = self._distribute()  # what forward runs through: the objective, or DDP around it
        self.scheduler = self._build_scheduler()
        self.amp_dtype = autocast_dtype(settings.trainer.precision, self.device)
        # collapse diagnostics (monitor: section); diagnostics: name -> callable, else built by name
        self.monitor = Monitor.create(settings.monitor, diagnostics, objective, data, transform, self.device,
                                      settings.seed)
        self.callbacks = Callbacks()
        if self.monitor is not None:
            self.monitor.on_warning = lambda text: self.callbacks.on_message(self, "warning", text)
        self.loggers = Loggers(loggers, settings.trainer.loggers)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        # distinct, reproducible randomness per rank; rank 0 draws exactly what one process would
        rank_offset = 1_000_003 * self.process.rank
        self.augment_generator = torch.Generator(self.device).manual_seed(settings.seed + 1 + rank_offset)
        if self.process.rank > 0:
            torch.manual_seed(settings.seed + rank_offset)
        self.epoch = 0
        self.batch_in_epoch = 0
        self.global_step = 0
        self.eval_seconds = 0.0  # time spent evaluating (not training time)
        self.curve: list[dict[str, float]] = []  # kNN accuracy against steps and training minutes
        self.clock = TrainingClock()  # training time; restarted by fit, restored on resume

    def add_callback(self, callback: Callback) -> "Trainer":
        """Attach ``callback`` to this trainer's events; returns the trainer."""
        self.callbacks.add(callback)
        return self

    def _build_loader(self) -> InMemoryBatches | StreamingBatches:
        """Batches of the training split: from memory, or read by workers from its files."""
        cfg = self.settings.data
        place = dict(rank=self.process.rank, world_size=self.process.world_size)
        if isinstance(self.data.train, StreamedImages):
            return StreamingBatches(self.data.train, cfg.batch_size, self.device, self.settings.seed, cfg.drop_last,
                                    workers=self.data.train.workers, **place,
                                    on_skipped=lambda text: self.callbacks.on_message(self, "warning", text))
        return InMemoryBatches(self.data.train, cfg.batch_size, self.device, self.settings.seed, cfg.drop_last, **place)

    # ------------------------------------------------------------------ control
    def _distribute(self) -> torch.nn.Module:
        """DDP around the objective when distributed, syncing only the optimised parameters."""
        if not self.process.distributed:
            return self.objective
        trainable = [p for g in self.optimizer.param_groups for p in g["params"] if p.requires_grad]
        if not trainable:
            distributed.broadcast_module_state(self.objective)
            return self.objective
        return distributed.DistributedObjective(self.objective, trainable, self.device)

    def _stop_requested(self) -> bool:
        """Whether any process was asked to stop (all processes agree, so they stop together)."""
        return distributed.any_rank([self._stop.is_set()], self.device)[0]

    def request_stop(self) -> None:
        """Finish the current step, write a checkpoint and return (what SIGINT/SIGTERM do)."""
        self._stop.set()

    @contextlib.contextmanager
    def _stop_on_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self._stop.is_set():  # second signal: stop now
                raise KeyboardInterrupt
            self._stop.set()
            self.callbacks.on_message(
                self, "info", f"{signal.Signals(signum).name} received: saving a checkpoint after this step ...")

        for s in previous:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        return {
            "model": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "extra_optimizers": {k: o.state_dict() for k, o in self.objective.extra_optimizers().items()},
            "rng": ckpt.rng_state({"augment": self.augment_generator}),
            "progress": {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "global_step": self.global_step,
                         "total_steps": self.total_steps, "train_seconds": self.clock.seconds(),
                         "eval_seconds": self.eval_seconds, "curve": self.curve},
            "monitor": self.monitor.state_dict() if self.monitor is not None else None,
            "config": self.config,
        }

    def save_checkpoint(self) -> Path:
        """Write the checkpoint (rank 0; every rank must call it, to hand over its RNG state)."""
        path = self.run_dir / ckpt.CHECKPOINT_NAME
        rng_per_rank = distributed.all_objects(ckpt.rng_state({"augment": self.augment_generator}))
        if self.process.is_main:
            with self.clock.paused():
                state = self._state()
                if self.process.distributed:
                    state.update(rng=rng_per_rank[0], rng_per_rank=rng_per_rank, world_size=self.process.world_size)
                ckpt.atomic_save(state, path)
        self.callbacks.on_checkpoint(self, path)
        return path

    def load_checkpoint(self, path: Path | None = None, resume: bool = False) -> None:
        """Restore model, optimisers, RNG and progress. ``resume``: also require the number of
        processes that wrote it (evaluating a distributed run's checkpoint in one process is fine)."""
        path = Path(path or self.run_dir / ckpt.CHECKPOINT_NAME)
        state = ckpt.load(path)
        saved_world = int(state.get("world_size", 1))
        if resume and saved_world != self.process.world_size:
            raise SelfsupError(
                f"the checkpoint in {self.run_dir} was written by {saved_world} process(es) and this run has "
                f"{self.process.world_size}; resume with the same number (torchrun --nproc_per_node ...)."
            )
        try:
            self.objective.load_state_dict(state["model"])
        except RuntimeError as exc:  # the pipeline builds another model than the one saved
            raise SelfsupError(
                f"the checkpoint {path} does not fit the model this pipeline builds: {checkpoint_mismatch(exc)}. "
                "Was config.yaml edited, or a model-shaping override (objective.*) given? Resume or evaluate "
                "with the run's own settings, or train a fresh run with the new ones."
            ) from None
        self.objective.to(self.device)
        configured = [{k: g[k] for k in OPTIMIZER_SETTINGS if k in g} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        for name, opt in self.objective.extra_optimizers().items():
            opt.load_state_dict(state["extra_optimizers"][name])
        per_rank = state.get("rng_per_rank", [state["rng"]])
        rng = per_rank[self.process.rank] if self.process.rank < len(per_rank) else state["rng"]
        ckpt.restore_rng_state(rng, {"augment": self.augment_generator})
        progress = state["progress"]
        self.epoch, self.batch_in_epoch, self.global_step = (
            progress["epoch"], progress["batch_in_epoch"], progress["global_step"]
        )
        self.eval_seconds = float(progress.get("eval_seconds", 0.0))
        self.curve = list(progress.get("curve", []))
        self.clock = TrainingClock(progress.get("train_seconds", 0.0))
        if self.monitor is not None and state.get("monitor"):
            self.monitor.load_state_dict(state["monitor"])
        if self.settings.trainer.max_minutes is not None and progress.get("total_steps"):
            self.set_total_steps(max(int(progress["total_steps"]), self.global_step, 1))  # the length it was sized to
        if self.config and state.get("config", {}).get("optim") != self.config.get("optim"):
            # resumed with other optim.* settings: they replace the checkpoint's, and the schedule
            # continues from the new base learning rate at the current step
            for group, values in zip(self.optimizer.param_groups, configured):
                group.update(values)
            self.set_total_steps(max(self.total_steps, self.global_step, 1))

    def _build_scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        """The learning-rate schedule over ``self.total_steps``, at step 0."""
        return build_scheduler(self.optimizer, self.settings.schedule, self.total_steps, self.steps_per_epoch)

    def set_total_steps(self, total_steps: int) -> None:
        """Change the run's length mid-training to ``total_steps``.

        The learning-rate schedule is rebuilt for the new length and resumed at the current
        step, and momentum schedules read the new total from the next step on (``fit`` does
        this for ``trainer.max_minutes`` once it has measured how many steps fit). :meth:`fit`
        still stops at ``trainer.epochs``.
        """
        if total_steps < max(self.global_step, 1):
            raise ValueError(f"total_steps must be at least the steps already taken ({self.global_step}), "
                             f"got {total_steps}")
        self.total_steps = int(total_steps)
        self.scheduler = self._build_scheduler()
        self.scheduler.last_epoch = self.global_step - 1  # built at step 0; step once to the current step
        with warnings.catch_warnings():  # a new scheduler has not seen the optimiser's past steps
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            self.scheduler.step()

    # ------------------------------------------------------------------ loop
    def train_step(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimiser step on a batch; advances ``global_step``. Returns the step's logs (tensors).

        images: ``[B, C, H, W]`` in [0, 1] on the training device (or a mapping modality ->
        ``[B, T, F]``); labels ``[B]``; index ``[B]`` (positions in the training split), as
        yielded by ``trainer.loader.epoch(e)``. Views are made with the pipeline's transform.
        """
        # an objective with num_views = 0 (e.g. DIM) reads batch.inputs: no views are made for it
        make_views = self.transform is not None and self.objective.num_views > 0
        with phase("augment"):
            views = self.transform(images, self.objective.num_views, self.augment_generator) if make_views else []
            if self.memory_format is torch.channels_last:
                images, views = to_channels_last(images), [to_channels_last(v) for v in views]
        batch = Batch(inputs=images, views=views, labels=labels, index=index)
        with phase("forward"), torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            out = self.model(batch)
        loss = out.loss.float()
        nonfinite = distributed.any_rank([not bool(torch.isfinite(loss))], self.device)[0]
        if nonfinite:
            where = f" on process {self.process.rank}" if self.process.distributed else ""
            kept = (f"the last good checkpoint in {self.run_dir} is kept"
                    if (self.run_dir / ckpt.CHECKPOINT_NAME).exists() else "no checkpoint had been written yet")
            raise TrainingDiverged(
                f"the loss became {loss.item()}{where} at epoch {self.epoch + 1}, step {self.global_step}; "
                f"training stopped and {kept}. Try a lower optim.lr, trainer.grad_clip=1.0, or "
                "trainer.precision=fp32."
            )
        with phase("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        with phase("optimizer"):
            if self.settings.trainer.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                params = [p for g in self.optimizer.param_groups for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(params, self.settings.trainer.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
        with phase("after_step"):
            self.objective.after_step(self.global_step, self.total_steps)
        logs = {k: v.detach() if torch.is_tensor(v) else torch.tensor(float(v)) for k, v in out.logs.items()}
        logs["loss"] = loss.detach()
        self.global_step += 1
        return logs

    def fit(self, resume: bool = False, overwrite: bool = False) -> FitResult:
        """Train until ``trainer.epochs``, ``max_steps`` or ``max_minutes`` is reached (from the
        run folder's checkpoint if ``resume``), export the encoder, evaluate; the run's result.

        A stop request (SIGINT/SIGTERM or :meth:`request_stop`) finishes the step, writes a
        checkpoint and returns with ``interrupted``. A NaN/inf loss raises
        :class:`~selfsup.errors.TrainingDiverged`, a collapse under ``monitor.stop_on_collapse``
        :class:`~selfsup.errors.CollapseDetected`; the last good checkpoint is kept.

        A fresh run never mixes with another: when ``run_dir`` already holds a run's files it
        is refused (:class:`~selfsup.errors.SelfsupError`) unless ``overwrite``, which deletes
        those files (and only those) first.
        """
        tcfg = self.settings.trainer
        main = self.process.is_main  # every rank evaluates (no rank idles in a collective), rank 0 writes
        before = None
        if resume:
            self.load_checkpoint(resume=True)
            if main:  # the settings this run continues with (resume overrides included)
                OmegaConf.save(OmegaConf.create(self.config), self.run_dir / CONFIG_NAME)
            if (self.run_dir / EVAL_BEFORE_NAME).exists():
                before = json.loads((self.run_dir / EVAL_BEFORE_NAME).read_text())
        else:
            self.clock = TrainingClock()
            claim_run_dir(self.run_dir, overwrite, main)
            distributed.barrier()  # the folder is ready (and emptied) before any process writes to it
            if main:
                OmegaConf.save(OmegaConf.create(self.config), self.run_dir / CONFIG_NAME)
        if main:
            self.loggers.open(self.run_dir, self.config, resume)
        try:
            self.callbacks.on_fit_start(self, resume)
            for note in self.data.notes:
                self.callbacks.on_message(self, "info", note)
            if self.eval_data is None:
                self.callbacks.on_message(self, "info", NO_EVALUATION)
            if not resume and tcfg.eval_before and self.eval_data is not None:
                before = self.evaluate_now()
                self.curve.append(self._curve_point(before["knn_acc"]))
                if main:
                    (self.run_dir / EVAL_BEFORE_NAME).write_text(json.dumps(before, indent=2))
                self.callbacks.on_evaluation(self, "before", before)
            self.objective.train()
            with self._stop_on_signals():
                interrupted = self._train_epochs()
            self.clock.stop()
        finally:
            self.loggers.close()
        if interrupted and self.monitor is not None and self.monitor.stopped:
            raise self.monitor.collapse_error(self.run_dir)
        if interrupted or not main:  # rank 0 exports and evaluates; the others are done
            result = self._result(before, None, interrupted)
        else:
            ckpt.export_encoder(getattr(self.objective, "encoder", self.objective), self.run_dir / ckpt.ENCODER_NAME)
            ckpt.write_encoder_manifest(self.objective, self.data.context(), self.config, self.run_dir)
            result = self.finish(before, evaluate_after=tcfg.eval_after)
        self.callbacks.on_end(self, result)
        return result

    def _train_epochs(self) -> bool:
        """The epoch loop; returns True when a stop was requested."""
        tcfg = self.settings.trainer
        budget = None
        if tcfg.max_minutes is not None:
            budget = MinutesBudget(tcfg.max_minutes, self.step_limit, self.global_step, self.clock.seconds())
        evaluations = EvaluationTimes(self.settings.eval.every_epochs, self.settings.eval.every_minutes,
                                      self.clock.seconds())
        sums: dict[str, torch.Tensor] = {}
        count, tick = 0, self.clock.seconds()
        done, _ = self._timed_decisions(budget, evaluations)
        while (tcfg.epochs is None or self.epoch < tcfg.epochs) and not done:
            for images, labels, index in self.loader.epoch(self.epoch, self.batch_in_epoch):
                logs = self.train_step(images, labels, index)
                self.batch_in_epoch += 1
                count += 1
                for k, v in logs.items():
                    sums[k] = sums[k] + v if k in sums else v.clone()
                self.callbacks.on_step(self, logs)
                done, evaluation_due = self._timed_decisions(budget, evaluations)
                if count == tcfg.log_every or self.batch_in_epoch == self.steps_per_epoch or done:
                    self._log_row(sums, count, self.clock.seconds() - tick)
                    sums, count, tick = {}, 0, self.clock.seconds()
                if self._stop_requested():
                    self.save_checkpoint()
                    return True
                if done:
                    break
                if evaluation_due:
                    self._evaluate_during()
            if self.batch_in_epoch >= self.steps_per_epoch:
                self.epoch += 1
                self.batch_in_epoch = 0
                if not done:
                    if evaluations.due_after_epoch(self.epoch):
                        self._evaluate_during()
                    if self.epoch % tcfg.checkpoint_every_epochs == 0:
                        self.save_checkpoint()
        self.save_checkpoint()
        return False

    def _timed_decisions(self, budget: MinutesBudget | None, evaluations: EvaluationTimes) -> tuple[bool, bool]:
        """(run done, evaluation due) after a step: the step limit, and what the training clock
        decides (minutes budget spent, schedule re-sized, ``eval.every_minutes`` due). Under
        torchrun rank 0's clock decides and every rank follows, at the same step."""
        if budget is None and evaluations.every_seconds is None:
            return self.global_step >= self.total_steps, False
        seconds = self.clock.seconds()
        total = budget.resize(self.global_step, seconds) if budget is not None else None
        spent = budget is not None and budget.exhausted(seconds)
        spent, due, total = distributed.from_main([float(spent), float(evaluations.due(seconds)), float(total or 0)],
                                                  self.device)
        if total and int(total) != self.total_steps:
            self.set_total_steps(int(total))
            self.callbacks.on_message(
                self, "info", f"{1000 * seconds / max(self.global_step, 1):.0f} ms/step so far: the schedule is "
                              f"sized to {int(total)} steps in {budget.seconds / 60:g} minutes")
        return bool(spent) or self.global_step >= self.total_steps, bool(due)

    def _log_row(self, sums: dict[str, torch.Tensor], count: int, seconds: float) -> None:
        row: dict[str, Any] = {"step": self.global_step, "epoch": self.epochs_done,
                               "train_seconds": self.clock.seconds(), "lr": self.optimizer.param_groups[0]["lr"]}
        row.update({k: float(v) / count for k, v in distributed.mean_over_ranks(sums, self.device).items()})
        row["images_per_s"] = count * self.settings.data.batch_size / max(seconds, 1e-9)
        if self.monitor is not None:
            with self.clock.paused():
                row.update(self.monitor.on_log(self.objective, self.global_step, stop=self.request_stop))
        self.loggers.log(row, "train")
        self.callbacks.on_log(self, row)

    # ------------------------------------------------------------------ evaluation
    def evaluate_now(self, linear_probe: bool | None = None, embedding_map: Path | None = None) -> dict[str, Any]:
        """kNN (and, per ``eval.linear_probe`` or ``linear_probe``, linear-probe) accuracy of
        the current representation on the held-out split. Its time counts in
        ``eval_seconds``, not in the training time."""
        cfg = self.settings.eval
        if self.eval_data is None:
            raise SelfsupError(f"nothing to evaluate on: {NO_EVALUATION}")
        if linear_probe is not None:
            cfg = dataclasses.replace(cfg, linear_probe=linear_probe)
        start = time.perf_counter()
        with self.clock.paused():
            result = evaluate(self.objective, self.eval_data, cfg, self.device, embedding_map)
        self.eval_seconds += time.perf_counter() - start
        return result

    def _evaluate_during(self) -> None:
        """``eval.every_*``: kNN and the monitor's diagnostics, as an ``eval`` metrics row."""
        if self.curve and self.curve[-1]["step"] == self.global_step:
            return  # every_epochs and every_minutes fell on the same step: evaluated already
        start = time.perf_counter()
        point = self._curve_point(float("nan"))
        row: dict[str, Any] = {"step": point["step"], "epoch": point["epoch"], "train_seconds": 60 * point["minutes"]}
        if self.eval_data is not None:
            point["knn_acc"] = row["knn_acc"] = self.evaluate_now(linear_probe=False)["knn_acc"]
        if self.monitor is not None:
            with self.clock.paused():
                row.update(self.monitor.measure(self.objective))
        row["eval_seconds"] = time.perf_counter() - start
        if self.eval_data is not None:
            self.curve.append(point)
        self.loggers.log(row, "eval")
        self.callbacks.on_evaluation(self, "during", row)

    @property
    def epochs_done(self) -> float:
        """Epochs trained so far, fractional (``epoch`` + the share of the current one done)."""
        return self.epoch + self.batch_in_epoch / self.steps_per_epoch

    def _curve_point(self, knn_acc: float) -> dict[str, float]:
        """A point of the kNN curve at the current step and training time."""
        return {"step": self.global_step, "epoch": self.epochs_done, "minutes": self.clock.seconds() / 60,
                "knn_acc": knn_acc}

    def _result(self, before: dict[str, Any] | None, after: dict[str, Any] | None, interrupted: bool,
                monitor: dict[str, Any] | None = None) -> FitResult:
        seconds = self.clock.seconds()
        return FitResult(
            self.run_dir, self.global_step, interrupted, before=before, after=after,
            epochs=self.epochs_done, train_seconds=seconds,
            eval_seconds=self.eval_seconds, curve=list(self.curve), monitor=monitor,
            images_per_s=self.global_step * self.settings.data.batch_size / seconds if seconds > 0 else 0.0,
        )

    def finish(self, before: dict[str, Any] | None, evaluate_after: bool = True) -> FitResult:
        """Evaluate the trained representation (unless ``evaluate_after`` is false); write
        ``metrics.json`` (the :class:`FitResult`), ``loss.png``, ``knn_curve.png`` and the
        t-SNE map; return the result."""
        from ..evaluation import save_knn_curve, save_loss_curve

        after = None
        if evaluate_after and self.eval_data is not None:
            after = self.evaluate_now(embedding_map=self.run_dir / "embedding_tsne.png")
            self.curve = [p for p in self.curve if p["step"] != self.global_step] + [self._curve_point(after["knn_acc"])]
            self.callbacks.on_evaluation(self, "after", after)
        monitor = None
        if self.monitor is not None:
            with self.clock.paused():
                monitor = self.monitor.summary(self.objective, self.global_step)
        result = self._result(before, after, False, monitor)
        (self.run_dir / METRICS_JSON).write_text(json.dumps(result.summary(), indent=2))
        if self.settings.eval.plots:
            rows = [r for r in read_rows(self.run_dir) if "loss" in r]
            if rows:
                save_loss_curve([r["step"] for r in rows], [r["loss"] for r in rows], self.run_dir / "loss.png",
                                title=str(self.config.get("objective", {}).get("name", "")))
            if len(self.curve) >= 2:
                save_knn_curve(self.curve, self.run_dir / KNN_CURVE_NAME)
        return result
