"""Mutual-information estimators over :class:`~selfsup.interfaces.Scores`.

Every estimator reads positive scores ``[N, P]`` and negative scores ``[N, K]`` and returns
``Estimate(loss, mi)`` in nats. References: InfoNCE (van den Oord et al. 2018), JSD as in
Deep InfoMax (Hjelm et al. 2019), Donsker-Varadhan / MINE (Belghazi et al. 2018), NWJ
(Nguyen, Wainwright & Jordan 2010); see Poole et al. 2019 for the bounds; DCL / DCLW,
InfoNCE without the positive in its denominator (Yeh et al. 2022), a training objective.

Under torch.distributed the terms that average over the whole batch at once (the
log-mean-exp of Donsker-Varadhan, NWJ's mean of exponentials) run over the negatives of
every process, so a step on W processes is the step one process takes on the global batch;
the row-wise terms (InfoNCE, JSD, DCL) already are, since DDP averages the processes' losses.
DCLW's weights are a softmax over the positives of the whole (gathered) batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup import distributed
from selfsup.interfaces import Estimate, MIEstimator, Scores


def _require_negatives(scores: Scores, name: str) -> Tensor:
    if scores.negative is None or scores.negative.shape[1] == 0:
        raise ValueError(f"the {name} estimator needs negatives, but the sampler provided none")
    return scores.negative


def row_logsumexp(x: Tensor) -> Tensor:
    """``torch.logsumexp(x, dim=1, keepdim=True)`` of ``[N, K]`` -> ``[N, 1]``, cheaper to train.

    The shifted exponentials are kept by autograd, so the backward is one multiply over
    ``[N, K]``; ``torch.logsumexp`` recomputes them (subtract, exp, multiply), which doubles
    the estimator's cost against a large queue. The exponential is taken
    in place in the shifted copy (one ``[N, K]`` buffer fewer).
    """
    shift = x.detach().amax(dim=1, keepdim=True)  # [N, 1]
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))  # rows of -inf stay -inf
    return (x - shift).exp_().sum(dim=1, keepdim=True).log() + shift


def _mean_log_mean_exp(x: Tensor) -> Tensor:
    """log(mean(exp(x))) over all elements (of every process under torch.distributed), without overflow."""
    return distributed.log_mean_exp(x)


class InfoNCE(MIEstimator):
    """InfoNCE: cross-entropy of each positive against its row's negatives.

    loss = mean over positives of ``-(s_pos - logsumexp([s_pos, s_neg...]))``;
    mi = log(1 + K) - loss, a lower bound that never exceeds log(1 + K).
    """

    def forward(self, scores: Scores) -> Estimate:
        negative = _require_negatives(scores, "InfoNCE")
        pos = scores.positive  # [N, P]
        neg_lse = row_logsumexp(negative)  # [N, 1]
        log_denominator = torch.logaddexp(pos, neg_lse)  # [N, P]: log(e^pos + sum e^neg)
        loss = (log_denominator - pos).mean()
        return Estimate(loss=loss, mi=math.log(scores.num_candidates) - loss.detach())


class JSD(MIEstimator):
    """Jensen-Shannon (softplus) estimator of Deep InfoMax.

    loss = E_neg[softplus(s)] + E_pos[softplus(-s)]; mi = log 4 - loss (the JSD-based
    estimate, in nats; it orders MI but is not a bound on it).
    """

    is_lower_bound = False

    def forward(self, scores: Scores) -> Estimate:
        negative = _require_negatives(scores, "JSD")
        loss = F.softplus(-scores.positive).mean() + F.softplus(negative).mean()
        return Estimate(loss=loss, mi=math.log(4.0) - loss.detach())


class DonskerVaradhan(MIEstimator):
    """Donsker-Varadhan: E_pos[s] - log E_neg[e^s], computed with logsumexp.

    ema_decay: when set, use MINE's bias-corrected gradient — the denominator of the
    log-term's gradient is a moving average of E_neg[e^s] instead of the batch value.
    """

    def __init__(self, ema_decay: float | None = None) -> None:
        super().__init__()
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay}")
        self.ema_decay = ema_decay
        self.register_buffer("running_mean_exp", torch.tensor(float("nan")))

    def forward(self, scores: Scores) -> Estimate:
        negative = _require_negatives(scores, "Donsker-Varadhan")
        log_mean_exp_neg = _mean_log_mean_exp(negative)
        mi = scores.positive.mean() - log_mean_exp_neg
        if self.ema_decay is None or not self.training:
            return Estimate(loss=-mi, mi=mi.detach())
        batch_mean_exp = log_mean_exp_neg.detach().exp()
        with torch.no_grad():
            if torch.isnan(self.running_mean_exp):
                self.running_mean_exp.copy_(batch_mean_exp)
            else:
                self.running_mean_exp.lerp_(batch_mean_exp, 1.0 - self.ema_decay)
        # Gradient of log E[e^s] replaced by grad E[e^s] / running mean (MINE, eq. 12);
        # the value of the surrogate term equals log_mean_exp_neg.
        mean_exp = log_mean_exp_neg.exp()
        surrogate = log_mean_exp_neg.detach() + (mean_exp - mean_exp.detach()) / self.running_mean_exp
        loss = -(scores.positive.mean() - surrogate)
        return Estimate(loss=loss, mi=mi.detach())


class NWJ(MIEstimator):
    """NWJ (f-GAN KL) bound: E_pos[s] - e^{-1} E_neg[e^s].

    Computed as E_pos[s] - E_neg[e^{s - 1}] with the exponent's maximum factored out.
    """

    def forward(self, scores: Scores) -> Estimate:
        negative = _require_negatives(scores, "NWJ")
        mean_exp_neg = _mean_log_mean_exp(negative - 1.0).exp()
        mi = scores.positive.mean() - mean_exp_neg
        return Estimate(loss=-mi, mi=mi.detach())


def von_mises_fisher_weights(positive: Tensor, sigma: float) -> Tensor:
    """DCLW's negative von Mises-Fisher weights of positive scores ``[N, P]`` -> ``[N, P]``, no gradient.

    ``w_j = 2 - M exp(s_j / sigma) / sum_m exp(s_m / sigma)`` over all M = N * P positive scores
    of the batch (of every process under torch.distributed, whose positives are gathered first),
    so the weights average exactly 1: easy positives (high scores) weigh less, hard ones up to 2.
    """
    with torch.no_grad():
        everyone = distributed.gather(positive.detach().float())  # [W*N, P]
        weights = 2.0 - everyone.numel() * torch.softmax(everyone.flatten() / sigma, dim=0)
        rows = distributed.local_slice(everyone.shape[0])
        return weights.view_as(everyone)[rows].to(positive.dtype)


class DecoupledContrastive(MIEstimator):
    """DCL (Yeh et al. 2022): InfoNCE with the positive taken out of its denominator; DCLW with ``sigma``.

    For each positive score s_ip (query i, positive p) against the query's negatives s_ik:
    ``loss = mean_ip [ -w_ip s_ip + logsumexp_k s_ik ]``. Without the positive in the
    log-sum-exp, the gradient of the negatives is no longer scaled down by how well the
    positive already wins (the paper's negative-positive coupling), so small batches and few
    negatives lose less.

    sigma: None gives DCL (w = 1). A number gives DCLW, the negative von Mises-Fisher weight
        ``w_ip = 2 - M softmax(s / sigma)_ip`` over the M positive scores of the global batch,
        detached (:func:`von_mises_fisher_weights`). sigma is in the units of the critic's
        scores: the paper's sigma = 0.5 applies to cosine similarities, so with a cosine
        critic of temperature T (scores cos/T) it is ``sigma: 0.5 / T`` (5.0 at the paper's
        T = 0.1, 1.0 at T = 0.5).

    The loss is not a bound on MI (it goes below zero once the positive beats the
    log-sum-exp of the negatives), so ``is_lower_bound`` is False. ``mi`` reports the InfoNCE
    bound of the same scores, ``log(1 + K) - mean_ip [log(e^s_ip + sum_k e^s_ik) - s_ip]``, so
    the logs compare with the other estimators'. DCL's loss is InfoNCE's minus
    ``mean_ip [log(e^s_ip + sum_k e^s_ik) - logsumexp_k s_ik]``, the positive's share of the
    denominator.
    """

    is_lower_bound = False

    def __init__(self, sigma: float | None = None) -> None:
        super().__init__()
        if sigma is not None and not sigma > 0:
            raise ValueError(f"sigma must be > 0 (or null for unweighted DCL), got {sigma}")
        self.sigma = None if sigma is None else float(sigma)

    def forward(self, scores: Scores) -> Estimate:
        negative = _require_negatives(scores, "DCL")
        pos = scores.positive  # [N, P]
        neg_lse = row_logsumexp(negative)  # [N, 1]
        weighted = pos if self.sigma is None else von_mises_fisher_weights(pos, self.sigma) * pos  # [N, P]
        loss = (neg_lse - weighted).mean()
        with torch.no_grad():
            infonce = (torch.logaddexp(pos, neg_lse) - pos).mean()  # [N, P] -> []
        return Estimate(loss=loss, mi=math.log(scores.num_candidates) - infonce)
