"""The engine: training loop, checkpoints, optimisers, evaluation of runs.

Public API: :func:`build_trainer` (pipeline -> :class:`Trainer`), :meth:`Trainer.fit` ->
:class:`FitResult`, :meth:`Trainer.train_step`, :class:`Callback` for the trainer's events,
and the names of the files a run folder holds.
"""

from .checkpoint import CHECKPOINT_NAME, ENCODER_NAME
from .events import Callback
from .pipeline import build_trainer, load_run_config, resolved_config
from .settings import Settings, settings_from_config
from .run_folder import CONFIG_NAME, EVAL_BEFORE_NAME, KNN_CURVE_NAME, METRICS_JSON
from .trainer import FitResult, Trainer

__all__ = [
    "CHECKPOINT_NAME", "CONFIG_NAME", "ENCODER_NAME", "EVAL_BEFORE_NAME", "KNN_CURVE_NAME", "METRICS_JSON",
    "Callback", "FitResult", "Settings", "Trainer", "build_trainer", "load_run_config", "resolved_config",
    "settings_from_config",
]
