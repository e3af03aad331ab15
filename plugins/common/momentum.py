"""Momentum (EMA) target networks, shared by MoCo, BYOL and friends."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with gradients off: the starting point of a momentum (target) network."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def momentum_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target = momentum * target + (1 - momentum) * online``, parameter-wise, in place.

    One fused ``torch._foreach_lerp_`` over all parameters (no per-parameter Python loop).
    Buffers (BN running statistics) are left to the target's own forward passes, as in MoCo.
    """
    target_params = list(target.parameters())
    online_params = list(online.parameters())
    if len(target_params) != len(online_params):
        raise ValueError("target and online networks have different parameter lists")
    if target_params:  # a parameter-free module (an identity projector) has nothing to follow
        torch._foreach_lerp_(target_params, online_params, 1.0 - momentum)


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """BYOL / MoCo v3 schedule: ``1 - (1 - base) * (cos(pi * step / total) + 1) / 2``.

    Rises from ``base`` at step 0 to 1 at ``total_steps``.
    """
    if total_steps <= 0:
        return base
    progress = min(max(step / total_steps, 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
