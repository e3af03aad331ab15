"""SMILE against hand computations, the built-in DV, and a case with a known MI."""

import math

import pytest
import torch

from selfsup.interfaces import Scores
from selfsup.plugins.common.estimators import DonskerVaradhan
from selfsup.testing import known_case_scores

from selfsup_example_plugin.smile import SMILE

POS = [[1.0], [3.0]]
NEG = [[0.0, 6.0], [2.0, -7.0]]  # with tau = 5: 6 -> 5 and -7 -> -5


def scores(requires_grad=False):
    return Scores(torch.tensor(POS, requires_grad=requires_grad), torch.tensor(NEG, requires_grad=requires_grad))


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_value_is_dv_with_clipped_negatives():
    expected = 2.0 - math.log((math.exp(0) + math.exp(5) + math.exp(2) + math.exp(-5)) / 4)
    for gradient in ("js", "dv", "smile"):
        estimate = SMILE(clip=5.0, gradient=gradient)(scores())
        assert estimate.mi.item() == pytest.approx(expected, rel=1e-6)
        assert estimate.loss.item() == pytest.approx(-expected, rel=1e-6)


def gradients(gradient):
    s = scores(requires_grad=True)
    SMILE(clip=5.0, gradient=gradient)(s).loss.backward()
    return s.positive.grad, s.negative.grad


def test_js_gradient_is_the_jensen_shannon_bound():
    # loss gradient = -d/ds [mean(-softplus(-pos)) - mean(softplus(neg))]
    positive, negative = gradients("js")
    torch.testing.assert_close(positive, torch.tensor([[-sigmoid(-p) / 2] for (p,) in POS]))
    torch.testing.assert_close(negative, torch.tensor([[sigmoid(n) / 4 for n in row] for row in NEG]))


def test_dv_gradient_is_the_unclipped_bound():
    # d/dneg log mean exp(neg) = softmax over all four unclipped negatives
    weights = [math.exp(n) for row in NEG for n in row]
    positive, negative = gradients("dv")
    torch.testing.assert_close(positive, torch.full((2, 1), -0.5))
    torch.testing.assert_close(negative, torch.tensor(weights).view(2, 2) / sum(weights))


def test_smile_gradient_ignores_clipped_negatives():
    weights = [math.exp(0), math.exp(5), math.exp(2), math.exp(-5)]  # softmax over the clipped exponents
    positive, negative = gradients("smile")
    torch.testing.assert_close(positive, torch.full((2, 1), -0.5))
    expected = torch.tensor([[weights[0], 0.0], [weights[2], 0.0]]) / sum(weights)  # 6 and -7 were clipped
    torch.testing.assert_close(negative, expected)


def test_without_clipping_it_is_donsker_varadhan():
    g = torch.Generator().manual_seed(0)
    s = Scores(3 * torch.randn(16, 1, generator=g), 3 * torch.randn(16, 31, generator=g))
    dv = DonskerVaradhan()(s).mi
    torch.testing.assert_close(SMILE(clip=None)(s).mi, dv)
    assert SMILE(clip=1.0)(s).mi.item() != pytest.approx(dv.item())  # clipping changes it here


def test_known_mi_of_correlated_gaussians():
    # optimal critic, rho = 0.8: MI = -log(1 - 0.64) / 2 = 0.511 nats; tau = 5 clips almost nothing
    case, true_mi = known_case_scores(0.8)
    assert SMILE(clip=5.0)(case).mi.item() == pytest.approx(true_mi, abs=0.05)


def high_mi_case(seed, dims=5, rho=0.99):
    """Sum of ``dims`` independent 1-d cases (optimal critic): MI = dims * -log(1 - rho^2) / 2 = 9.79 nats."""
    parts = [known_case_scores(rho, 256, 64, seed * 100 + j) for j in range(dims)]
    scores = Scores(sum(p.positive for p, _ in parts), sum(p.negative for p, _ in parts))
    return scores, sum(mi for _, mi in parts)


def test_clipping_trades_variance_for_bias_at_high_mi():
    # Song & Ermon: the DV partition term's variance grows like e^MI; clipping tames it, at
    # the price of bias (so SMILE does not declare is_lower_bound).
    cases = [high_mi_case(seed) for seed in range(12)]

    def estimates(clip):
        return torch.tensor([SMILE(clip=clip)(scores).mi.item() for scores, _ in cases])

    true_mi = cases[0][1]
    assert true_mi == pytest.approx(-2.5 * math.log(1 - 0.99**2))
    unclipped, clipped = estimates(None), estimates(1.0)
    assert clipped.std() < unclipped.std() / 4
    assert estimates(5.0).mean() > true_mi + 1.0  # over-estimates: not a lower bound
    assert not SMILE.is_lower_bound


@pytest.mark.parametrize(("kwargs", "message"), [({"clip": 0.0}, "clip must be > 0"),
                                                 ({"gradient": "mine"}, "gradient must be 'js', 'dv' or 'smile'")])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SMILE(**kwargs)


def test_needs_negatives():
    with pytest.raises(ValueError, match="needs negatives"):
        SMILE()(Scores(torch.zeros(2, 1)))
