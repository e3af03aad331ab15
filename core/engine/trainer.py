"""The training loop: a plain PyTorch loop, not a framework.

One step: batch -> views (augmented on the device) -> ``objective(batch)`` -> backward ->
optimiser and scheduler step -> ``objective.after_step`` (momentum update, enqueue).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from ..config import (DataConfig, EvalConfig, MonitorConfig, OptimConfig, ScheduleConfig, TrainerConfig, section,
                      to_container)
from ..data import DataSplits, ViewTransform
from ..errors import ConfigError, SelfsupError, TrainingDiverged
from ..interfaces import Batch, Encoder, Objective
from . import checkpoint as ckpt
from . import distributed
from .evaluate import evaluate
from .host_memory import retain_freed_host_memory
from .loader import InMemoryBatches
from .monitor import Monitor
from ..profiling import phase
from .optim import build_optimizer, build_scheduler
from .run_log import RunLogger, read_rows

CONFIG_NAME = "config.yaml"
EVAL_BEFORE_NAME = "eval_before.json"
METRICS_JSON = "metrics.json"


@dataclass
class Settings:
    """Every non-component section of a pipeline, validated."""

    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    seed: int = 0


@dataclass
class FitResult:
    run_dir: Path
    steps: int
    interrupted: bool
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (``auto``: bf16 or fp16 on CUDA, fp32 on CPU)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def compile_encoders(objective: torch.nn.Module) -> list[str]:
    """``torch.compile`` each :class:`Encoder` sub-module of ``objective`` in place; their names.

    ``nn.Module.compile`` keeps the module (and its state-dict keys) as it is, so checkpoints
    and the encoder export are the same with or without compilation. Nested encoders inside
    a compiled one are left to it.
    """
    compiled: list[str] = []
    for name, module in objective.named_modules():
        if isinstance(module, Encoder) and not any(name.startswith(done + ".") for done in compiled):
            module.compile()
            compiled.append(name)
    return compiled


def _check_compiler(device: torch.device) -> None:
    """``torch.compile`` on the CPU generates C++: fail before training, not inside inductor."""
    if device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c):
        raise ConfigError(
            "trainer.compile: torch.compile on the CPU needs a C++ compiler (g++, c++ or clang++ on PATH, "
            "or CXX set), and none was found. Install one or set trainer.compile=false."
        )


def _channels_last(x: Any) -> Any:
    """Image batches ``[N, C, H, W]`` in channels-last order; anything else (multimodal mappings) as it is."""
    return x.contiguous(memory_format=torch.channels_last) if torch.is_tensor(x) and x.dim() == 4 else x


class Trainer:
    """Trains ``objective`` on ``data.train`` and evaluates on ``data.test``.

    run_dir: where config, metrics, checkpoints, encoder export and plots go.
    config: the resolved pipeline (plain dict), saved as ``config.yaml`` for reproduction.

    Under ``torchrun`` (see :mod:`selfsup.engine.distributed`) each process trains on its
    shard of every global batch of ``data.batch_size``; gradients of the objective's
    optimised parameters are averaged by DDP (momentum encoders are not wrapped); the
    augmentation generator and the global torch RNG differ per rank (seeded from ``seed``
    and the rank); rank 0 alone writes config, metrics, checkpoints (holding every rank's
    RNG state), the encoder export and evaluation results, and shows the progress bar.
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
    ) -> None:
        self.objective = objective
        self.data = data
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
            _check_compiler(self.device)
            compile_encoders(self.objective)
        self.loader = InMemoryBatches(
            data.train, settings.data.batch_size, self.device, settings.seed, settings.data.drop_last,
            rank=self.process.rank, world_size=self.process.world_size,
        )
        self.steps_per_epoch = len(self.loader)
        self.total_steps = settings.trainer.epochs * self.steps_per_epoch
        if settings.trainer.max_steps is not None:
            self.total_steps = min(self.total_steps, settings.trainer.max_steps)
        self.optimizer = build_optimizer(objective.parameter_groups(), settings.optim, settings.data.batch_size)
        self.model = self._distribute()  # what forward runs through: the objective, or DDP around it
        self.scheduler = self._build_scheduler()
        self.amp_dtype = autocast_dtype(settings.trainer.precision, self.device)
        # collapse diagnostics (monitor: section); diagnostics: name -> callable, else built by name
        self.monitor = Monitor.create(settings.monitor, diagnostics, objective, data, transform, self.device,
                                      settings.seed)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        # distinct, reproducible randomness per rank; rank 0 draws exactly what one process would
        rank_offset = 1_000_003 * self.process.rank
        self.augment_generator = torch.Generator(self.device).manual_seed(settings.seed + 1 + rank_offset)
        if self.process.rank > 0:
            torch.manual_seed(settings.seed + rank_offset)
        self.epoch = 0
        self.batch_in_epoch = 0
        self.global_step = 0

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
            tqdm.write(f"\n{signal.Signals(signum).name} received: saving a checkpoint after this step ...")
            self._stop.set()

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
            "progress": {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "global_step": self.global_step},
            "config": self.config,
        }

    def save_checkpoint(self) -> Path:
        """Write the checkpoint (rank 0; every rank must call it, to hand over its RNG state)."""
        path = self.run_dir / ckpt.CHECKPOINT_NAME
        rng_per_rank = distributed.all_objects(ckpt.rng_state({"augment": self.augment_generator}))
        if self.process.is_main:
            state = self._state()
            if self.process.distributed:
                state.update(rng=rng_per_rank[0], rng_per_rank=rng_per_rank, world_size=self.process.world_size)
            ckpt.atomic_save(state, path)
        return path

    def load_checkpoint(self, path: Path | None = None, resume: bool = False) -> None:
        """Restore model, optimisers, RNG and progress. ``resume``: also require the number of
        processes that wrote it (evaluating a distributed run's checkpoint in one process is fine)."""
        state = ckpt.load(path or self.run_dir / ckpt.CHECKPOINT_NAME)
        saved_world = int(state.get("world_size", 1))
        if resume and saved_world != self.process.world_size:
            raise SelfsupError(
                f"the checkpoint in {self.run_dir} was written by {saved_world} process(es) and this run has "
                f"{self.process.world_size}; resume with the same number (torchrun --nproc_per_node ...)."
            )
        self.objective.load_state_dict(state["model"])
        self.objective.to(self.device)
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

    def _build_scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        """The learning-rate schedule over ``self.total_steps``, at step 0."""
        return build_scheduler(self.optimizer, self.settings.schedule, self.total_steps, self.steps_per_epoch)

    def set_total_steps(self, total_steps: int) -> None:
        """Change the run's length mid-training to ``total_steps``.

        The learning-rate schedule is rebuilt for the new length and resumed at the current
        step, and momentum schedules read the new total from the next step on (``bench
        quality`` uses this once it has measured how many steps fit in its time budget).
        :meth:`fit` still stops at ``trainer.epochs``, and a resumed run takes its length
        from the configuration again.
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
                images, views = _channels_last(images), [_channels_last(v) for v in views]
        batch = Batch(inputs=images, views=views, labels=labels, index=index)
        with phase("forward"), torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            out = self.model(batch)
        loss = out.loss.float()
        nonfinite = distributed.any_rank([not bool(torch.isfinite(loss))], self.device)[0]
        if nonfinite:
            where = f" on process {self.process.rank}" if self.process.distributed else ""
            raise TrainingDiverged(
                f"the loss became {loss.item()}{where} at epoch {self.epoch + 1}, step {self.global_step}; "
                f"training stopped and the last good checkpoint in {self.run_dir} is kept. Try a lower "
                "optim.lr, trainer.grad_clip=1.0, or trainer.precision=fp32."
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

    def fit(self, resume: bool = False) -> FitResult:
        """Train (from the run folder's checkpoint if ``resume``), then evaluate."""
        tcfg = self.settings.trainer
        self.run_dir.mkdir(parents=True, exist_ok=True)
        before = None
        if resume:
            self.load_checkpoint(resume=True)
            if (self.run_dir / EVAL_BEFORE_NAME).exists():
                before = json.loads((self.run_dir / EVAL_BEFORE_NAME).read_text())
        else:
            main = self.process.is_main  # every rank evaluates (no rank idles in a collective), rank 0 writes
            if main:
                OmegaConf.save(OmegaConf.create(self.config), self.run_dir / CONFIG_NAME)
            if tcfg.eval_before:
                before = evaluate(self.objective, self.data, self.settings.eval, self.device)
                if main:
                    (self.run_dir / EVAL_BEFORE_NAME).write_text(json.dumps(before, indent=2))
                    print(f"random init: {format_results(before)}")
        logger = RunLogger(self.run_dir, enabled=self.process.is_main)
        self.objective.train()
        interrupted = False
        try:
            with self._stop_on_signals():
                interrupted = self._train_epochs(logger)
        finally:
            logger.close()
        if interrupted:
            if self.monitor is not None and self.monitor.stopped:
                raise self.monitor.collapse_error(self.run_dir)
            if self.process.is_main:
                print(f"stopped at step {self.global_step}; resume with: selfsup train --resume {self.run_dir}")
            return FitResult(self.run_dir, self.global_step, True, before=before)
        if not self.process.is_main:  # rank 0 exports and evaluates; the others are done
            return FitResult(self.run_dir, self.global_step, False, before=before)
        ckpt.export_encoder(getattr(self.objective, "encoder", self.objective), self.run_dir / ckpt.ENCODER_NAME)
        after = self.finish(before) if tcfg.eval_after else None
        return FitResult(self.run_dir, self.global_step, False, before=before, after=after)

    def _train_epochs(self, logger: RunLogger) -> bool:
        """The epoch loop; returns True when a stop was requested."""
        tcfg = self.settings.trainer
        batch_size = self.settings.data.batch_size
        while self.epoch < tcfg.epochs and self.global_step < self.total_steps:
            bar = tqdm(
                total=self.steps_per_epoch, initial=self.batch_in_epoch, desc=f"epoch {self.epoch + 1}/{tcfg.epochs}",
                disable=not (tcfg.progress and self.process.is_main), dynamic_ncols=True, mininterval=0.5, leave=False,
            )
            sums: dict[str, torch.Tensor] = {}
            count, tick = 0, time.perf_counter()
            for images, labels, index in self.loader.epoch(self.epoch, self.batch_in_epoch):
                logs = self.train_step(images, labels, index)
                self.batch_in_epoch += 1
                count += 1
                for k, v in logs.items():
                    sums[k] = sums[k] + v if k in sums else v.clone()
                bar.update(1)
                if count == tcfg.log_every or self.batch_in_epoch == self.steps_per_epoch:
                    elapsed = time.perf_counter() - tick
                    row = {"step": self.global_step, "epoch": self.epoch + self.batch_in_epoch / self.steps_per_epoch,
                           "lr": self.optimizer.param_groups[0]["lr"]}
                    row.update({k: float(v) / count for k, v in distributed.mean_over_ranks(sums, self.device).items()})
                    row["images_per_s"] = count * batch_size / max(elapsed, 1e-9)
                    if self.monitor is not None:
                        row.update(self.monitor.on_log(self.objective, self.global_step, stop=self.request_stop))
                    logger.log(row)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.0f}")
                    sums, count, tick = {}, 0, time.perf_counter()
                if self._stop_requested():
                    bar.close()
                    self.save_checkpoint()
                    return True
                if self.global_step >= self.total_steps:
                    break
            bar.close()
            if self.batch_in_epoch >= self.steps_per_epoch:
                self.epoch += 1
                self.batch_in_epoch = 0
            if self.epoch % tcfg.checkpoint_every_epochs == 0 or self.global_step >= self.total_steps:
                self.save_checkpoint()
        self.save_checkpoint()
        return False

    def finish(self, before: dict[str, Any] | None) -> dict[str, Any]:
        """Evaluate the trained representation, write ``metrics.json`` and the plots."""
        from ..evaluation import save_loss_curve

        after = evaluate(self.objective, self.data, self.settings.eval, self.device, self.run_dir / "embedding_tsne.png")
        summary = {"before": before, "after": after, "steps": self.global_step, "epochs": self.epoch}
        if self.monitor is not None:
            summary["monitor"] = self.monitor.summary(self.objective, self.global_step)
        (self.run_dir / METRICS_JSON).write_text(json.dumps(summary, indent=2))
        rows = [r for r in read_rows(self.run_dir) if "loss" in r]
        if rows and self.settings.eval.plots:
            save_loss_curve([r["step"] for r in rows], [r["loss"] for r in rows], self.run_dir / "loss.png",
                            title=str(self.config.get("objective", {}).get("name", "")))
        print(f"trained:     {format_results(after)}")
        return after


def format_results(results: dict[str, Any]) -> str:
    parts = [f"kNN acc {100 * results['knn_acc']:.2f}%"]
    if "linear_acc" in results:
        parts.append(f"linear acc {100 * results['linear_acc']:.2f}%")
    return ", ".join(parts)


def settings_from_config(cfg: Any) -> Settings:
    """Validate the non-component sections of a pipeline into :class:`Settings`."""
    node = to_container(cfg)
    seed = node.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed: expected int, got {seed!r}.")
    return Settings(
        data=section(cfg, "data"), optim=section(cfg, "optim"), schedule=section(cfg, "schedule"),
        trainer=section(cfg, "trainer"), eval=section(cfg, "eval"), monitor=section(cfg, "monitor"), seed=seed,
    )

