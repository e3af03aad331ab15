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
