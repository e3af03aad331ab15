"""Estimators against hand computations and analytic values."""

import math

import pytest
import torch

from selfsup.interfaces import Scores
from selfsup.plugins.common.estimators import JSD, NWJ, DonskerVaradhan, InfoNCE, row_logsumexp


def test_infonce_hand_computation():
    pos = torch.tensor([[2.0], [0.5]])
    neg = torch.tensor([[1.0, 0.0], [0.5, -1.0]])
    # row 0: -log(e^2 / (e^2 + e^1 + e^0)); row 1: -log(e^.5 / (e^.5 + e^.5 + e^-1))
    row0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(1) + 1))
    row1 = -math.log(math.exp(0.5) / (2 * math.exp(0.5) + math.exp(-1)))
    est = InfoNCE()(Scores(pos, neg))
    assert est.loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert est.mi.item() == pytest.approx(math.log(3) - (row0 + row1) / 2, rel=1e-6)


@pytest.mark.parametrize("k", [1, 7, 4096])
def test_infonce_identical_embeddings_gives_log_k_plus_1(k):
    # identical embeddings: every score equal -> loss = -log(1 / (K + 1)), MI estimate 0
    q = torch.nn.functional.normalize(torch.randn(1, 16), dim=1).expand(8, 16)
    queue = q[:1].expand(k, 16)
    est = InfoNCE()(Scores((q * q).sum(1, keepdim=True) / 0.2, q @ queue.T / 0.2))
    assert est.loss.item() == pytest.approx(-math.log(1 / (k + 1)), rel=1e-5)
    assert est.mi.item() == pytest.approx(0.0, abs=1e-4)


def test_infonce_never_exceeds_log_candidates():
    pos = torch.full((4, 1), 50.0)
    neg = torch.full((4, 9), -50.0)
    est = InfoNCE()(Scores(pos, neg))
    assert est.mi.item() <= math.log(10) + 1e-6
    assert est.mi.item() == pytest.approx(math.log(10), abs=1e-5)


def test_infonce_multiple_positives_per_row():
    pos = torch.tensor([[1.0, 2.0]])
    neg = torch.tensor([[0.0]])
    expected = ((math.log(math.e + 1) - 1) + (math.log(math.e**2 + 1) - 2)) / 2
    assert InfoNCE()(Scores(pos, neg)).loss.item() == pytest.approx(expected, rel=1e-6)


def test_infonce_is_stable_for_huge_scores():
    est = InfoNCE()(Scores(torch.tensor([[1e4]], dtype=torch.float64), torch.tensor([[1e4 - 1, -1e4]], dtype=torch.float64)))
    assert torch.isfinite(est.loss)
    assert est.loss.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-5)


def test_jsd_hand_computation():
    pos = torch.tensor([[1.0], [-1.0]])
    neg = torch.tensor([[0.0, 2.0], [-2.0, 1.0]])
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expected = (sp(-1) + sp(1)) / 2 + (sp(0) + sp(2) + sp(-2) + sp(1)) / 4
    est = JSD()(Scores(pos, neg))
    assert est.loss.item() == pytest.approx(expected, rel=1e-6)
    # independent (all-zero scores): loss = 2 log 2, estimate log4 - 2log2 = 0
    zero = JSD()(Scores(torch.zeros(3, 1), torch.zeros(3, 4)))
    assert zero.mi.item() == pytest.approx(0.0, abs=1e-6)


def test_dv_hand_computation_and_overflow():
    pos = torch.tensor([[1.0], [3.0]])
    neg = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    expected = 2.0 - math.log((1 + math.e + math.e**2 + math.exp(-1)) / 4)
    assert DonskerVaradhan()(Scores(pos, neg)).mi.item() == pytest.approx(expected, rel=1e-6)
    big = DonskerVaradhan()(Scores(torch.tensor([[1000.0]]), torch.tensor([[1000.0, 1000.0]])))
    assert big.mi.item() == pytest.approx(0.0, abs=1e-3)


def test_dv_moving_average_keeps_value_changes_gradient():
    pos = torch.tensor([[1.0], [2.0]], requires_grad=True)
    neg = torch.tensor([[0.5, -0.5], [1.0, 0.0]], requires_grad=True)
    plain = DonskerVaradhan()(Scores(pos, neg))
    ema = DonskerVaradhan(ema_decay=0.9)
    ema.running_mean_exp.fill_(10.0)  # pretend history says E[e^T] was large
    corrected = ema(Scores(pos, neg))
    assert corrected.loss.item() == pytest.approx(plain.loss.item(), rel=1e-6)
    (g_plain,) = torch.autograd.grad(plain.loss, neg)
    (g_ema,) = torch.autograd.grad(corrected.loss, neg)
    assert g_ema.abs().sum() < g_plain.abs().sum()  # larger running mean -> smaller gradient


def test_nwj_hand_computation():
    pos = torch.tensor([[1.0], [2.0]])
    neg = torch.tensor([[0.0, 1.0], [1.0, 2.0]])
    expected = 1.5 - math.exp(-1) * (1 + math.e + math.e + math.e**2) / 4
    assert NWJ()(Scores(pos, neg)).mi.item() == pytest.approx(expected, rel=1e-6)
    # independent critic T = 1 everywhere: bound is 1 - e^0 = 0
    assert NWJ()(Scores(torch.ones(2, 1), torch.ones(2, 3))).mi.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("estimator", [InfoNCE(), JSD(), DonskerVaradhan(), NWJ()])
def test_estimators_need_negatives(estimator):
    with pytest.raises(ValueError, match="needs negatives"):
        estimator(Scores(torch.zeros(2, 1), None))


def test_scores_from_matrix_splits_rows():
    m = torch.arange(9.0).view(3, 3)
    s = Scores.from_matrix(m, torch.eye(3, dtype=torch.bool))
    assert s.positive.squeeze(1).tolist() == [0.0, 4.0, 8.0]
    assert s.negative.tolist() == [[1.0, 2.0], [3.0, 5.0], [6.0, 7.0]]
    with pytest.raises(ValueError, match="same number of positives"):
        Scores.from_matrix(m, torch.tensor([[1, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.bool))


def test_row_logsumexp_matches_torch_in_value_and_gradient():
    torch.manual_seed(0)
    x = (30 * torch.randn(5, 7)).requires_grad_()  # spread wide enough to overflow a naive exp
    x_ref = x.detach().clone().requires_grad_()
    weights = torch.randn(5, 1)
    value, expected = row_logsumexp(x), torch.logsumexp(x_ref, dim=1, keepdim=True)
    assert value.shape == (5, 1)
    torch.testing.assert_close(value, expected)
    (value * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    # log(e^0 + e^log 3) = log 4 by hand; a row of -inf (every candidate masked) stays -inf
    rows = torch.tensor([[0.0, math.log(3.0)], [float("-inf"), float("-inf")]])
    assert row_logsumexp(rows)[0, 0].item() == pytest.approx(math.log(4.0))
    assert row_logsumexp(rows)[1, 0].item() == float("-inf")
