"""SMILE: Donsker-Varadhan with the negatives' exponent clipped (Song & Ermon, ICLR 2020).

    I_SMILE = E_pos[s] - log E_neg[clip(e^s, e^-tau, e^tau)]
            = mean(positive) - log mean(exp(clamp(negative, -tau, tau)))

Clipping bounds the variance of the partition-function term, which for the unclipped DV /
MINE bound grows exponentially with the true MI; tau -> infinity recovers DV.

SMILE is an estimator of the value; which bound trains the critic is a separate choice. The
loss always has the value -I_SMILE, and its gradient is that of:

* ``js`` — the Jensen-Shannon f-GAN bound, as in the authors' reference code
  (``smile_lower_bound``: ``js + (dv - js).detach()``);
* ``dv`` — the unclipped Donsker-Varadhan bound (every negative keeps its gradient);
* ``smile`` — the clipped estimate itself (negatives beyond +-tau get no gradient).

On digits instance discrimination (``pipeline.yaml``) ``dv`` learns the best features of the
three; clipped hard negatives (``smile``) and the JS gradient learn worse ones.

The log-mean-exp runs over every negative of the batch at once, so under torch.distributed
it runs over the negatives of every process (:func:`selfsup.distributed.log_mean_exp`): one
step on several processes is then the step one process takes on the global batch, which
``selfsup plugins check`` verifies.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from selfsup import distributed
from selfsup.interfaces import Estimate, MIEstimator, Scores


def log_mean_exp(x: Tensor) -> Tensor:
    """``log(mean(exp(x)))`` over every element of ``x``, without overflow; under
    torch.distributed over the elements of every process (the global batch's negatives)."""
    return distributed.log_mean_exp(x)


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
    gradient: the bound whose gradient trains the critic; the loss's value is -SMILE either
        way. ``js``: Jensen-Shannon (the reference code's choice); ``dv``: unclipped
        Donsker-Varadhan; ``smile``: the clipped estimate itself.
    Not a guaranteed lower bound for finite tau (clipping trades bias for variance).
    """

    is_lower_bound = False

    def __init__(self, clip: float | None = 5.0, gradient: Literal["js", "dv", "smile"] = "js") -> None:
        super().__init__()
        if clip is not None and not clip > 0:
            raise ValueError(f"clip must be > 0 (or null for no clipping), got {clip}")
        if gradient not in ("js", "dv", "smile"):
            raise ValueError(f"gradient must be 'js', 'dv' or 'smile', got {gradient!r}")
        self.clip = None if clip is None else float(clip)
        self.gradient = gradient

    def forward(self, scores: Scores) -> Estimate:
        """Scores (positive ``[N, P]``, negative ``[N, K]``) -> Estimate(loss [], mi [])."""
        if scores.negative is None or scores.negative.shape[1] == 0:
            raise ValueError("the SMILE estimator needs negatives, but the sampler provided none")
        mi = clipped_dv(scores.positive, scores.negative, self.clip)
        if self.gradient == "smile":
            return Estimate(loss=-mi, mi=mi.detach())
        if self.gradient == "dv":
            bound = clipped_dv(scores.positive, scores.negative, None)
        else:
            bound = js_fgan_bound(scores.positive, scores.negative)
        surrogate = bound + (mi - bound).detach()  # the value of SMILE, the gradient of the bound
        return Estimate(loss=-surrogate, mi=mi.detach())

    def extra_repr(self) -> str:
        return f"clip={self.clip}, gradient={self.gradient!r}"
