"""The engine: training loop, checkpoints, optimisers, evaluation of runs."""

from .pipeline import build_trainer, load_run_config
from .trainer import FitResult, Settings, Trainer

__all__ = ["FitResult", "Settings", "Trainer", "build_trainer", "load_run_config"]
