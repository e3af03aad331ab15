"""SMILE: Donsker-Varadhan with the negatives' exponent clipped (Song & Ermon, ICLR 2020).

    I_SMILE = E_pos[s] - log E_neg[clip(e^s, e^-tau, e^tau)]
            = mean(positive) - log mean(exp(clamp(negative, -tau, tau)))

Clipping bounds the variance of the partition-function term, which for the unclipped DV /
MINE bound grows exponentially with the true MI; tau -> infinity recovers DV. As in the
authors' reference code (``smile_lower_bound``), the critic is trained with the gradient of
the Jensen-Shannon f-GAN bound while the reported value is the clipped DV estimate
(``gradient="js"``); ``gradient="dv"`` back-propagates the clipped DV estimate itself.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.interfaces import Estimate, MIEstimator, Scores


def log_mean_exp(x: Tensor) -> Tensor:
    """``log(mean(exp(x)))`` over every element of ``x``, without overflow."""
    return torch.logsumexp(x.reshape(-1), 0) - math.log(x.numel())


def clipped_dv(positive: Tensor, negative: Tensor, clip: float | None) -> Tensor:
    """The SMILE value: positive ``[N, P]``, negative ``[N, K]`` -> scalar (nats)."""
    clipped = negative if clip is None else negative.clamp(-clip, clip)  # clip(e^s, e^-t, e^t) = e^clip(s)
    return positive.mean() - log_mean_exp(clipped)


def js_fgan_bound(positive: Tensor, negative: Tensor) -> Tensor:
    """Jensen-Shannon f-GAN bound ``E_pos[-softplus(-s)] - E_neg[softplus(s)]``: the training signal."""
    return -F.softplus(-positive).mean() - F.softplus(negative).mean()


class SMILE(MIEstimator):
    """SMILE (Song & Ermon 2020): Donsker-Varadhan with the negatives' e^s clipped to [e^-tau, e^tau].

    clip: tau > 0, or null for no clipping (plain DV). Song & Ermon use 1 and 5.
    gradient: ``js`` trains with the Jensen-Shannon bound's gradient as the reference code
        does (the loss's value is still -SMILE); ``dv`` back-propagates -SMILE itself.
    Not a guaranteed lower bound for finite tau (clipping trades bias for variance).
    """

    is_lower_bound = False

    def __init__(self, clip: float | None = 5.0, gradient: Literal["js", "dv"] = "js") -> None:
        super().__init__()
        if clip is not None and not clip > 0:
            raise ValueError(f"clip must be > 0 (or null for no clipping), got {clip}")
        if gradient not in ("js", "dv"):
            raise ValueError(f"gradient must be 'js' or 'dv', got {gradient!r}")
        self.clip = None if clip is None else float(clip)
        self.gradient = gradient

    def forward(self, scores: Scores) -> Estimate:
        """Scores (positive ``[N, P]``, negative ``[N, K]``) -> Estimate(loss [], mi [])."""
        if scores.negative is None or scores.negative.shape[1] == 0:
            raise ValueError("the SMILE estimator needs negatives, but the sampler provided none")
        mi = clipped_dv(scores.positive, scores.negative, self.clip)
        if self.gradient == "dv":
            return Estimate(loss=-mi, mi=mi.detach())
        js = js_fgan_bound(scores.positive, scores.negative)
        surrogate = js + (mi - js).detach()  # value of SMILE, gradient of JS
        return Estimate(loss=-surrogate, mi=mi.detach())

    def extra_repr(self) -> str:
        return f"clip={self.clip}, gradient={self.gradient!r}"
