"""Helpers shared by test modules (import as `from support import ...`)."""

from __future__ import annotations

import types
from dataclasses import dataclass

from selfsup.engine.events import Callback
from selfsup.hookspecs import hookimpl


class RecordingCallback(Callback):
    """Records the trainer's events as (name, payload) pairs, and its messages by level."""

    def __init__(self):
        self.events: list[tuple[str, object]] = []
        self.messages: dict[str, list[str]] = {"info": [], "warning": []}

    def on_fit_start(self, trainer, resume):
        self.events.append(("fit_start", resume))

    def on_log(self, trainer, row):
        self.events.append(("log", dict(row)))

    def on_evaluation(self, trainer, stage, result):
        self.events.append((f"evaluation_{stage}", dict(result)))

    def on_checkpoint(self, trainer, path):
        self.events.append(("checkpoint", trainer.global_step))

    def on_message(self, trainer, level, text):
        self.messages[level].append(text)

    def on_end(self, trainer, result):
        self.events.append(("end", result))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


def tiny_pipeline(tmp_path, **overrides) -> dict:
    """A MoCo pipeline on digits that trains a few steps in about a second."""
    cfg = {
        "seed": 0,
        "data": {"dataset": {"name": "digits"}, "augment": {"name": "two_view"}, "batch_size": 64},
        "objective": {
            "name": "moco",
            "encoder": {"name": "small_conv", "width": 8},
            "sampler": {"name": "momentum_queue", "size": 100},
            "embedding_dim": 16,
        },
        "optim": {"name": "sgd", "lr": 0.05},
        "trainer": {"epochs": 1, "max_steps": 6, "progress": False, "eval_before": False,
                    "eval_after": False, "out_dir": str(tmp_path), "log_every": 2},
        "eval": {"linear_probe": False, "plots": False},
    }
    for dotted, value in overrides.items():
        node = cfg
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


# --------------------------------------------------------------------------- fake plugins
@dataclass
class FakeDist:
    """The distribution an entry point belongs to (only its name is read)."""

    name: str


class FakeEntryPoint:
    """What importlib.metadata yields, for a plugin of a made-up distribution."""

    def __init__(self, name, plugin=None, error=None, dist="selfsup-fake"):
        self.name, self.value, self.dist = name, f"fake_{name}", FakeDist(dist)
        self._plugin, self._error = plugin, error

    def load(self):
        if self._error:
            raise self._error
        return self._plugin


def plugin_module(name, register):
    """A module named ``name`` whose ``selfsup_register`` hook is ``register``."""
    module = types.ModuleType(name)
    module.selfsup_register = hookimpl(register)
    return module


def torchrun(args: list[str], cwd, world: int = 2) -> None:
    """``python -m torch.distributed.run --standalone --nproc_per_node WORLD ARGS`` in ``cwd``
    (one thread per process, launcher variables of the calling process cleared)."""
    import os
    import subprocess
    import sys

    launcher_keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launcher_keys}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world), *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
        )


def fit_until(cfg: dict, run_dir, registry, stop_at: int | None = None, resume: bool = False):
    """Build and fit ``cfg``; with ``stop_at``, request a stop (as SIGINT does) after that step.
    Returns (trainer, FitResult)."""
    from omegaconf import OmegaConf

    from selfsup.engine import build_trainer

    trainer = build_trainer(OmegaConf.create(cfg), registry, run_dir=run_dir)
    if stop_at is not None:
        original = trainer.objective.after_step

        def after_step(step, total):
            original(step, total)
            if step + 1 == stop_at:
                trainer.request_stop()  # what SIGINT / SIGTERM do

        trainer.objective.after_step = after_step
    return trainer, trainer.fit(resume=resume)
