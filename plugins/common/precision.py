"""Precision of loss computations under autocast."""

from __future__ import annotations

import torch
from torch import Tensor


def at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32, or as it is when already float32 or wider (float64 stays float64).

    Losses that are unstable in half precision (cross-correlations, variances, margins on
    cosines) promote their inputs with this instead of ``.float()``, which would silently
    turn a float64 model's loss into float32.
    """
    return x.to(torch.promote_types(x.dtype, torch.float32))
