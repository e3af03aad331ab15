"""DCL / DCLW (decoupled contrastive loss) against hand computations, its relation to InfoNCE,
its decoupled gradient, and training with every sampler from YAML."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from support import tiny_pipeline

from selfsup.config import build
from selfsup.engine import build_trainer
from selfsup.errors import ConfigError
from selfsup.interfaces import Scores
from selfsup.plugins.common.estimators import DecoupledContrastive, InfoNCE, von_mises_fisher_weights
from selfsup.testing import check_estimator

POS = [[2.0], [0.5]]
NEG = [[1.0, 0.0], [0.5, -1.0]]


def hand_scores(requires_grad: bool = False) -> Scores:
    return Scores(torch.tensor(POS, requires_grad=requires_grad), torch.tensor(NEG, requires_grad=requires_grad))


def test_dcl_hand_computation():
    # row 0: -2 + log(e^1 + e^0); row 1: -0.5 + log(e^0.5 + e^-1): the positive is not in the log
    row0 = -2.0 + math.log(math.e + 1.0)
    row1 = -0.5 + math.log(math.exp(0.5) + math.exp(-1.0))
    est = DecoupledContrastive()(hand_scores())
    assert est.loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # mi: InfoNCE's bound of the same scores, log 3 - InfoNCE loss
    infonce0 = math.log(math.exp(2) + math.e + 1.0) - 2.0
    infonce1 = math.log(2 * math.exp(0.5) + math.exp(-1.0)) - 0.5
    assert est.mi.item() == pytest.approx(math.log(3) - (infonce0 + infonce1) / 2, rel=1e-6)


def test_dclw_hand_computation_and_detached_weights():
    sigma = 1.0
    # softmax over the batch's positives [2, 0.5] / sigma; w = 2 - N softmax, N = 2
    p0 = math.exp(2.0) / (math.exp(2.0) + math.exp(0.5))
    w0, w1 = 2 - 2 * p0, 2 - 2 * (1 - p0)
    assert (w0 + w1) / 2 == pytest.approx(1.0)  # the weights average 1
    assert w0 < 1 < w1  # the easy positive (score 2) weighs less than the hard one (0.5)
    row0 = -w0 * 2.0 + math.log(math.e + 1.0)
    row1 = -w1 * 0.5 + math.log(math.exp(0.5) + math.exp(-1.0))
    scores = hand_scores(requires_grad=True)
    est = DecoupledContrastive(sigma=sigma)(scores)
    assert est.loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert est.mi.item() == pytest.approx(DecoupledContrastive()(hand_scores()).mi.item(), rel=1e-6)  # InfoNCE's
    est.loss.backward()
    # the weights carry no gradient: d loss / d s_i = -w_i / N exactly
    assert scores.positive.grad.flatten().tolist() == pytest.approx([-w0 / 2, -w1 / 2], rel=1e-6)
    weights = von_mises_fisher_weights(torch.tensor(POS), sigma)
    assert weights.flatten().tolist() == pytest.approx([w0, w1], rel=1e-6)


def test_weights_of_equal_positives_are_one_and_sigma_sharpens_them():
    assert torch.allclose(von_mises_fisher_weights(torch.full((5, 2), 3.0), 0.5), torch.ones(5, 2))
    pos = torch.tensor([[1.0], [0.0], [-1.0]])
    soft, sharp = von_mises_fisher_weights(pos, 100.0), von_mises_fisher_weights(pos, 0.1)
    assert soft.flatten().tolist() == pytest.approx([1.0, 1.0, 1.0], abs=0.02)  # large sigma: plain DCL
    assert sharp.flatten().tolist() == pytest.approx([2 - 3.0, 2.0, 2.0], abs=1e-3)  # the easiest takes it all


def test_dcl_is_infonce_minus_the_positives_share_of_the_denominator():
    g = torch.Generator().manual_seed(0)
    pos, neg = 3 * torch.randn(6, 2, generator=g), 3 * torch.randn(6, 5, generator=g)  # two positives per row
    share = torch.logaddexp(pos, torch.logsumexp(neg, 1, keepdim=True)) - torch.logsumexp(neg, 1, keepdim=True)
    difference = InfoNCE()(Scores(pos, neg)).loss - DecoupledContrastive()(Scores(pos, neg)).loss
    assert difference.item() == pytest.approx(share.mean().item(), rel=1e-5)
    assert difference.item() > 0  # DCL's loss is always the lower one


def test_the_negatives_gradient_no_longer_depends_on_the_positive():
    """Decoupling: InfoNCE's gradient to the negatives shrinks as the positive wins; DCL's does not."""
    neg = torch.tensor([[0.3, -0.2, 1.0]])
    grads = {}
    for name, estimator in (("dcl", DecoupledContrastive()), ("infonce", InfoNCE())):
        for pos in (0.0, 5.0):
            negative = neg.clone().requires_grad_(True)
            estimator(Scores(torch.tensor([[pos]]), negative)).loss.backward()
            grads[name, pos] = negative.grad
    assert torch.allclose(grads["dcl", 0.0], torch.softmax(neg, dim=1))  # softmax over the negatives only
    assert torch.allclose(grads["dcl", 0.0], grads["dcl", 5.0])
    assert grads["infonce", 5.0].sum() < 0.05 * grads["infonce", 0.0].sum()


def test_conformance_kit_for_dcl_and_dclw():
    check_estimator(DecoupledContrastive())
    check_estimator(DecoupledContrastive(sigma=0.5))
    assert not DecoupledContrastive.is_lower_bound and DecoupledContrastive.needs_negatives


def test_a_bad_sigma_names_its_key(registry):
    with pytest.raises(ConfigError, match=r"objective\.estimator: .*sigma must be > 0"):
        build(registry, "estimator", {"name": "dcl", "sigma": 0.0}, "objective.estimator")
    assert build(registry, "estimator", {"name": "dcl", "sigma": None}, "objective.estimator").sigma is None


SAMPLERS = {
    "in_batch": {"name": "in_batch"},
    "momentum_queue": {"name": "momentum_queue", "size": 100},
    "memory_bank": {"name": "memory_bank", "num_negatives": 64},
    "nearest_neighbour": {"name": "nearest_neighbour", "size": 100},
}


@pytest.mark.parametrize("estimator", [{"name": "dcl"}, {"name": "dcl", "sigma": 2.5}], ids=["dcl", "dclw"])
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_dcl_trains_moco_with_every_sampler_from_yaml(tmp_path, registry, sampler, estimator):
    cfg = tiny_pipeline(tmp_path, trainer__max_steps=2, data__batch_size=32)
    cfg["objective"].update(estimator=estimator, sampler=SAMPLERS[sampler], critic={"name": "dot", "temperature": 0.2})
    cfg["objective"]["encoder"]["width"] = 4
    trainer = build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "run")
    assert isinstance(trainer.objective.estimator, DecoupledContrastive)
    assert trainer.objective.estimator.sigma == estimator.get("sigma")
    before = [p.detach().clone() for p in trainer.objective.encoder.parameters()]
    result = trainer.fit()
    assert result.steps == 2
    assert any(not torch.equal(b, a) for b, a in zip(before, trainer.objective.encoder.parameters()))
