"""The validated non-component sections of a pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import (DataConfig, EvalConfig, MonitorConfig, OptimConfig, ScheduleConfig, TrainerConfig, section,
                      to_container)
from ..errors import ConfigError
from .device import select_device


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



def settings_from_config(cfg: Any) -> Settings:
    """Validate the non-component sections of a pipeline into :class:`Settings`."""
    node = to_container(cfg)
    seed = node.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed: expected int, got {seed!r}.")
    settings = Settings(
        data=section(cfg, "data"), optim=section(cfg, "optim"), schedule=section(cfg, "schedule"),
        trainer=section(cfg, "trainer"), eval=section(cfg, "eval"), monitor=section(cfg, "monitor"), seed=seed,
    )
    if not all(0.0 <= b < 1.0 for b in settings.optim.betas):
        raise ConfigError(f"optim.betas: each must be >= 0 and < 1, got {list(settings.optim.betas)}.")
    select_device(settings.trainer.device)  # a device this machine lacks is refused before anything is built
    return settings
