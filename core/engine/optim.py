"""Optimisers by name and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from ..config import OptimConfig, ScheduleConfig


def build_optimizer(param_groups: list[dict], cfg: OptimConfig, batch_size: int) -> torch.optim.Optimizer:
    """SGD, AdamW or LARS over ``param_groups``; a group's ``lr_scale`` multiplies the lr."""
    lr = cfg.lr * (batch_size / 256 if cfg.scale_by_batch else 1.0)
    groups = []
    for group in param_groups:
        group = dict(group)
        group["lr"] = lr * group.pop("lr_scale", 1.0)
        group.setdefault("weight_decay", cfg.weight_decay)
        groups.append(group)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.name == "lars":
        from timm.optim import Lars

        return Lars(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimiser {cfg.name!r}")


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float = 0.0):
    """Multiplier of the base lr at step s: linear warm-up, then cosine decay to ``min_ratio``."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        progress = min((step - warmup_steps) / span, 1.0)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int
) -> LambdaLR:
    """The schedule of every parameter group, except groups marked ``fixed_lr: True`` (their
    learning rate stays at its starting value, e.g. SimSiam's predictor)."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.name == "constant":
        factor = lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0  # noqa: E731
    else:
        factor = warmup_cosine(total_steps, warmup, cfg.min_lr_ratio)
    return LambdaLR(optimizer, [(lambda s: 1.0) if g.get("fixed_lr") else factor for g in optimizer.param_groups])
