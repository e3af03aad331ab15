"""The training loop: a plain PyTorch loop, not a framework.

One step: batch -> views (augmented on the device) -> ``objective(batch)`` -> backward ->
optimiser and scheduler step -> ``objective.after_step`` (momentum update, enqueue).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from ..config import DataConfig, EvalConfig, OptimConfig, ScheduleConfig, TrainerConfig, section, to_container
from ..data import DataSplits, ViewTransform
from ..errors import ConfigError, TrainingDiverged
from ..interfaces import Batch, Objective
from . import checkpoint as ckpt
from .evaluate import evaluate
from .loader import InMemoryBatches
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


class Trainer:
    """Trains ``objective`` on ``data.train`` and evaluates on ``data.test``.

    run_dir: where config, metrics, checkpoints, encoder export and plots go.
    config: the resolved pipeline (plain dict), saved as ``config.yaml`` for reproduction.
    """

    def __init__(
        self,
        objective: Objective,
        data: DataSplits,
        transform: ViewTransform | None,
        settings: Settings,
        run_dir: Path,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.objective = objective
        self.data = data
        self.transform = transform
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.config = config or {}
        self.device = select_device(settings.trainer.device)
        self._stop = threading.Event()
        self.objective.to(self.device)
        self.loader = InMemoryBatches(
            data.train, settings.data.batch_size, self.device, settings.seed, settings.data.drop_last
        )
        self.steps_per_epoch = len(self.loader)
        self.total_steps = settings.trainer.epochs * self.steps_per_epoch
        if settings.trainer.max_steps is not None:
            self.total_steps = min(self.total_steps, settings.trainer.max_steps)
        self.optimizer = build_optimizer(objective.parameter_groups(), settings.optim, settings.data.batch_size)
        self.scheduler = build_scheduler(self.optimizer, settings.schedule, self.total_steps, self.steps_per_epoch)
        self.amp_dtype = autocast_dtype(settings.trainer.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.augment_generator = torch.Generator(self.device).manual_seed(settings.seed + 1)
        self.epoch = 0
        self.batch_in_epoch = 0
        self.global_step = 0

    # ------------------------------------------------------------------ control
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
        path = self.run_dir / ckpt.CHECKPOINT_NAME
        ckpt.atomic_save(self._state(), path)
        return path

    def load_checkpoint(self, path: Path | None = None) -> None:
        state = ckpt.load(path or self.run_dir / ckpt.CHECKPOINT_NAME)
        self.objective.load_state_dict(state["model"])
        self.objective.to(self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        for name, opt in self.objective.extra_optimizers().items():
            opt.load_state_dict(state["extra_optimizers"][name])
        ckpt.restore_rng_state(state["rng"], {"augment": self.augment_generator})
        progress = state["progress"]
        self.epoch, self.batch_in_epoch, self.global_step = (
            progress["epoch"], progress["batch_in_epoch"], progress["global_step"]
        )

    # ------------------------------------------------------------------ loop
    def _step(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        views = self.transform(images, self.objective.num_views, self.augment_generator) if self.transform else []
        batch = Batch(inputs=images, views=views, labels=labels, index=index)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            out = self.objective(batch)
        loss = out.loss.float()
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the loss became {loss.item()} at epoch {self.epoch + 1}, step {self.global_step}; "
                f"training stopped and the last good checkpoint in {self.run_dir} is kept. Try a lower "
                "optim.lr, trainer.grad_clip=1.0, or trainer.precision=fp32."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.settings.trainer.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.settings.trainer.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.objective.after_step(self.global_step, self.total_steps)
        logs = {k: v.detach() if torch.is_tensor(v) else torch.tensor(float(v)) for k, v in out.logs.items()}
        logs["loss"] = loss.detach()
        return logs

    def fit(self, resume: bool = False) -> FitResult:
        """Train (from the run folder's checkpoint if ``resume``), then evaluate."""
        tcfg = self.settings.trainer
        self.run_dir.mkdir(parents=True, exist_ok=True)
        before = None
        if resume:
            self.load_checkpoint()
            if (self.run_dir / EVAL_BEFORE_NAME).exists():
                before = json.loads((self.run_dir / EVAL_BEFORE_NAME).read_text())
        else:
            OmegaConf.save(OmegaConf.create(self.config), self.run_dir / CONFIG_NAME)
            if tcfg.eval_before:
                before = evaluate(self.objective, self.data, self.settings.eval, self.device)
                (self.run_dir / EVAL_BEFORE_NAME).write_text(json.dumps(before, indent=2))
                print(f"random init: {format_results(before)}")
        logger = RunLogger(self.run_dir)
        self.objective.train()
        interrupted = False
        try:
            with self._stop_on_signals():
                interrupted = self._train_epochs(logger)
        finally:
            logger.close()
        if interrupted:
            print(f"stopped at step {self.global_step}; resume with: selfsup train --resume {self.run_dir}")
            return FitResult(self.run_dir, self.global_step, True, before=before)
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
                disable=not tcfg.progress, dynamic_ncols=True, mininterval=0.5, leave=False,
            )
            sums: dict[str, torch.Tensor] = {}
            count, tick = 0, time.perf_counter()
            for images, labels, index in self.loader.epoch(self.epoch, self.batch_in_epoch):
                logs = self._step(images, labels, index)
                self.global_step += 1
                self.batch_in_epoch += 1
                count += 1
                for k, v in logs.items():
                    sums[k] = sums[k] + v if k in sums else v.clone()
                bar.update(1)
                if count == tcfg.log_every or self.batch_in_epoch == self.steps_per_epoch:
                    elapsed = time.perf_counter() - tick
                    row = {"step": self.global_step, "epoch": self.epoch + self.batch_in_epoch / self.steps_per_epoch,
                           "lr": self.optimizer.param_groups[0]["lr"]}
                    row.update({k: float(v) / count for k, v in sums.items()})
                    row["images_per_s"] = count * batch_size / max(elapsed, 1e-9)
                    logger.log(row)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.0f}")
                    sums, count, tick = {}, 0, time.perf_counter()
                if self._stop.is_set():
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
        trainer=section(cfg, "trainer"), eval=section(cfg, "eval"), seed=seed,
    )

