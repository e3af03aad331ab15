"""Each non-contrastive loss against a hand computation and a known value."""

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.plugins.noncontrastive.barlow_twins import barlow_twins_loss, cross_correlation
from selfsup.plugins.noncontrastive.byol import byol_loss, symmetric_byol_loss
from selfsup.plugins.noncontrastive.simclr import nt_xent_loss
from selfsup.plugins.noncontrastive.simsiam import simsiam_loss
from selfsup.plugins.noncontrastive.vicreg import covariance_term, variance_term, vicreg_loss


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- SimCLR / NT-Xent
def test_nt_xent_by_hand():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 1.0], [0.0, 2.0]])  # cosines: z1_0.z2_0 = 1/sqrt2, z1_1.z2_1 = 1, ...
    t = 0.5
    views = [F.normalize(v, dim=0) for v in (*z1, *z2)]
    partner = [2, 3, 0, 1]
    total = 0.0
    for i in range(4):
        logits = {j: float(views[i] @ views[j]) / t for j in range(4) if j != i}
        total += -logits[partner[i]] + math.log(sum(math.exp(v) for v in logits.values()))
    assert nt_xent_loss(z1, z2, t).loss.item() == pytest.approx(total / 4, rel=1e-6)


def test_nt_xent_of_collapsed_embeddings_is_log_2n_minus_1():
    z = torch.ones(8, 5)
    assert nt_xent_loss(z, z, 0.5).loss.item() == pytest.approx(math.log(2 * 8 - 1), rel=1e-6)


def test_nt_xent_is_symmetric_and_small_for_separated_pairs():
    z1, z2 = randn(16, 8), randn(16, 8, seed=1)
    assert nt_xent_loss(z1, z2).loss.item() == pytest.approx(nt_xent_loss(z2, z1).loss.item(), rel=1e-6)
    one_hot = torch.eye(8) * 10
    assert nt_xent_loss(one_hot, one_hot, 0.1).loss.item() < 1e-3  # orthogonal instances, identical views


# --------------------------------------------------------------------------- BYOL
def test_byol_loss_by_hand_and_range():
    p = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    z = torch.tensor([[0.0, 5.0], [1.0, 0.0], [0.0, -1.0]])  # cosines 0, 1, -1 -> 2, 0, 4
    assert byol_loss(p, z).loss.item() == pytest.approx((2 + 0 + 4) / 3)
    u, v = randn(32, 6), randn(32, 6, seed=1)
    squared_distance = (F.normalize(u, dim=1) - F.normalize(v, dim=1)).pow(2).sum(1).mean()
    assert byol_loss(u, v).loss.item() == pytest.approx(squared_distance.item(), rel=1e-5)


def test_symmetric_byol_loss_sums_both_directions_and_is_symmetric():
    p1, p2, z1, z2 = (randn(10, 4, seed=s) for s in range(4))
    terms = symmetric_byol_loss(p1, p2, z1, z2)
    assert terms.loss.item() == pytest.approx((byol_loss(p1, z2).loss + byol_loss(p2, z1).loss).item(), rel=1e-6)
    assert terms.similarity.item() == pytest.approx(1 - terms.loss.item() / 4, rel=1e-5)  # loss = 2 (2 - 2 cos)
    assert terms.loss.item() == pytest.approx(symmetric_byol_loss(p2, p1, z2, z1).loss.item(), rel=1e-6)


def test_symmetric_byol_loss_stops_the_target_gradient():
    p1, p2 = randn(4, 3).requires_grad_(), randn(4, 3, seed=1).requires_grad_()
    z1, z2 = randn(4, 3, seed=2).requires_grad_(), randn(4, 3, seed=3).requires_grad_()
    symmetric_byol_loss(p1, p2, z1, z2).loss.backward()
    assert p1.grad is not None and z1.grad is None and z2.grad is None


# --------------------------------------------------------------------------- SimSiam
def test_simsiam_loss_by_hand():
    p1, z2 = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]])  # cos 1
    p2, z1 = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])  # cos 0
    assert simsiam_loss(p1, p2, z1, z2).loss.item() == pytest.approx(-0.5)
    assert simsiam_loss(z1, z1, z1, z1).loss.item() == pytest.approx(-1.0)  # the minimum


def test_simsiam_loss_is_symmetric_and_stop_gradient_is_an_option():
    p1, p2, z1, z2 = (randn(6, 4, seed=s).requires_grad_() for s in range(4))
    terms = simsiam_loss(p1, p2, z1, z2)
    assert terms.similarity.item() == pytest.approx(-terms.loss.item())
    assert terms.loss.item() == pytest.approx(simsiam_loss(p2, p1, z2, z1).loss.item(), rel=1e-6)
    terms.loss.backward()
    assert p1.grad is not None and z1.grad is None and z2.grad is None
    simsiam_loss(p1, p2, z1, z2, stop_gradient=False).loss.backward()
    assert z1.grad is not None and z2.grad is not None


# --------------------------------------------------------------------------- Barlow Twins
def test_cross_correlation_by_hand():
    z1 = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 8.0]])
    z2 = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0]])

    def standardise(column):
        mean = sum(column) / len(column)
        std = math.sqrt(sum((x - mean) ** 2 for x in column) / len(column) + 1e-5)
        return [(x - mean) / std for x in column]

    a = [standardise([row[d] for row in z1.tolist()]) for d in range(2)]
    b = [standardise([row[d] for row in z2.tolist()]) for d in range(2)]
    expected = [[sum(x * y for x, y in zip(a[i], b[j])) / 3 for j in range(2)] for i in range(2)]
    torch.testing.assert_close(cross_correlation(z1, z2), torch.tensor(expected), rtol=1e-5, atol=1e-6)
    terms = barlow_twins_loss(z1, z2, lambda_offdiag=0.5)
    on = sum((1 - expected[i][i]) ** 2 for i in range(2))
    off = expected[0][1] ** 2 + expected[1][0] ** 2
    assert terms.on_diagonal.item() == pytest.approx(on, rel=1e-5)
    assert terms.off_diagonal.item() == pytest.approx(off, rel=1e-5)
    assert terms.loss.item() == pytest.approx(on + 0.5 * off, rel=1e-5)


def test_barlow_twins_identical_whitened_embeddings_give_zero():
    # columns of a Hadamard matrix: mean 0, variance 1, uncorrelated -> C = I
    z = torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
    terms = barlow_twins_loss(z, z)
    assert terms.on_diagonal.item() == pytest.approx(0.0, abs=1e-8)
    assert terms.off_diagonal.item() == pytest.approx(0.0, abs=1e-10)
    assert terms.loss.item() == pytest.approx(0.0, abs=1e-8)


def test_barlow_twins_identical_correlated_embeddings_pay_only_redundancy():
    x = randn(20000, 1)
    z = torch.cat([x, 0.6 * x + 0.8 * randn(20000, 1, seed=1)], dim=1)  # correlation 0.6
    terms = barlow_twins_loss(z, z, lambda_offdiag=0.0051)
    assert terms.on_diagonal.item() == pytest.approx(0.0, abs=1e-8)
    assert terms.off_diagonal.item() == pytest.approx(2 * 0.6**2, abs=0.02)  # C_01^2 + C_10^2
    assert terms.loss.item() == pytest.approx(0.0051 * terms.off_diagonal.item(), rel=1e-4)


def test_barlow_twins_is_symmetric():
    z1, z2 = randn(32, 5), randn(32, 5, seed=1)
    assert barlow_twins_loss(z1, z2).loss.item() == pytest.approx(barlow_twins_loss(z2, z1).loss.item(), rel=1e-5)


# --------------------------------------------------------------------------- VICReg
def test_vicreg_variance_of_a_collapsed_batch_is_one_minus_sqrt_eps_per_branch():
    collapsed = torch.full((16, 8), 3.0)
    assert variance_term(collapsed).item() == pytest.approx(1 - math.sqrt(1e-4))  # 0.99: the hinge at gamma = 1
    terms = vicreg_loss(collapsed, collapsed)
    assert terms.variance.item() == pytest.approx(0.99)  # averaged over the two branches
    assert terms.invariance.item() == 0.0 and terms.covariance.item() == 0.0
    assert terms.loss.item() == pytest.approx(25 * 0.99)


def test_vicreg_variance_is_zero_above_the_hinge():
    assert variance_term(randn(4000, 4) * 2).item() == 0.0  # std 2 > gamma


def test_vicreg_covariance_by_hand_and_for_independent_dimensions():
    z = torch.tensor([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])  # cov [[1, 2], [2, 4]] (unbiased)
    assert covariance_term(z).item() == pytest.approx((2**2 + 2**2) / 2)
    assert covariance_term(randn(100000, 8)).item() == pytest.approx(0.0, abs=5e-4)  # about (d - 1) / N


def test_vicreg_by_hand_and_symmetric():
    z1 = torch.tensor([[0.0, 0.0], [2.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [2.0, 3.0]])
    invariance = (1 + 0 + 0 + 4) / 4
    # z1 columns: var 2 and 0.5 -> std hinge relu(1 - sqrt(v + 1e-4)); z2: var 0.5 and 4.5
    hinge = lambda v: max(0.0, 1 - math.sqrt(v + 1e-4))  # noqa: E731
    variance = ((hinge(2) + hinge(0.5)) / 2 + (hinge(0.5) + hinge(4.5)) / 2) / 2
    covariance = (2 * 1.0**2) / 2 + (2 * 1.5**2) / 2  # off-diagonal cov of z1: 1, of z2: 1.5
    terms = vicreg_loss(z1, z2)
    assert terms.invariance.item() == pytest.approx(invariance)
    assert terms.variance.item() == pytest.approx(variance, rel=1e-5)
    assert terms.covariance.item() == pytest.approx(covariance, rel=1e-5)
    assert terms.loss.item() == pytest.approx(25 * invariance + 25 * variance + covariance, rel=1e-5)
    assert vicreg_loss(z2, z1).loss.item() == pytest.approx(terms.loss.item(), rel=1e-6)


@pytest.mark.parametrize("loss", [nt_xent_loss, byol_loss, barlow_twins_loss, vicreg_loss])
def test_mismatched_shapes_are_rejected(loss):
    with pytest.raises(ValueError, match="z1|prediction"):
        loss(torch.zeros(4, 3), torch.zeros(4, 2))


def test_losses_keep_float64_and_promote_half_precision():
    z1, z2 = torch.randn(16, 8, dtype=torch.float64), torch.randn(16, 8, dtype=torch.float64)
    assert barlow_twins_loss(z1, z2).loss.dtype == torch.float64
    assert vicreg_loss(z1, z2).loss.dtype == torch.float64
    assert barlow_twins_loss(z1.half(), z2.half()).loss.dtype == torch.float32
