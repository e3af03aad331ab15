"""From a pipeline config to a ready :class:`~selfsup.engine.trainer.Trainer`."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from ..config import SECTIONS, build, to_container
from ..errors import ConfigError
from ..plugin_manager import default_registry
from ..registry import Registry
from .monitor import build_diagnostics
from .run_log import build_loggers
from .settings import Settings, settings_from_config
from .trainer import CONFIG_NAME, Trainer


def resolved_config(cfg: Any, settings: Settings) -> dict[str, Any]:
    """The pipeline with every section's defaults filled in (what ``config.yaml`` holds)."""
    node = to_container(cfg)
    out: dict[str, Any] = {"seed": settings.seed, "objective": node["objective"]}
    for name in SECTIONS:
        value = dataclasses.asdict(getattr(settings, name))
        out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in value.items()}
    return out


def default_run_dir(settings: Settings, objective_name: str) -> Path:
    name = settings.trainer.run_name or f"{objective_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(settings.trainer.out_dir) / name


def build_trainer(cfg: Any, registry: Registry | None = None, run_dir: Path | None = None) -> Trainer:
    """Validate ``cfg`` and build data, augmentation and objective; nothing trains yet."""
    registry = registry or default_registry()
    settings = settings_from_config(cfg)
    node = to_container(cfg)
    data = build(registry, "dataset", settings.data.dataset, "data.dataset")
    if data.is_multimodal and settings.data.augment:
        raise ConfigError(
            f"data.augment: image augmentation cannot run on multimodal data (modalities "
            f"{', '.join(data.modality_shapes)}); set data.augment: null."
        )
    transform = build(registry, "transform", settings.data.augment, "data.augment") if settings.data.augment else None
    torch.manual_seed(settings.seed)
    objective = build(registry, "objective", node["objective"], "objective", context=data.context())
    if objective.needs_labels and bool((data.train.labels < 0).any()):
        raise ConfigError(
            f"objective: {type(objective).__name__} is supervised and needs a label for every training "
            f"sample, but {int((data.train.labels < 0).sum())} of {len(data.train)} are unknown (-1)."
        )
    objective_name = node["objective"] if isinstance(node["objective"], str) else node["objective"]["name"]
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(settings, objective_name)
    # diagnostics and loggers are looked up by name: the core imports no plugin
    diagnostics = build_diagnostics(registry, settings.monitor)
    loggers = build_loggers(registry, settings.trainer.loggers)
    return Trainer(objective, data, transform, settings, run_dir, config=resolved_config(cfg, settings),
                   diagnostics=diagnostics, loggers=loggers)


def load_run_config(run_dir: Path):
    """The resolved pipeline saved in a run folder."""
    from ..config import load_pipeline

    return load_pipeline(Path(run_dir) / CONFIG_NAME)
