"""Adversarial prior matching: losses by hand, and the min-max separation of the two players."""

import math

import pytest
import torch
from torch import nn

from selfsup.interfaces import Batch
from selfsup.plugins.dim.critics import SeparableCritic
from selfsup.plugins.dim.objective import DeepInfoMax
from selfsup.plugins.dim.prior import AdversarialPrior


def sp(x: float) -> float:
    return math.log1p(math.exp(x))


def one_unit_prior(w1, b1, w2, b2, **kwargs) -> AdversarialPrior:
    """D(z) = w2 * relu(w1 . z + b1) + b2 with hand-set weights."""
    prior = AdversarialPrior(dim=len(w1), hidden_dims=[1], **kwargs)
    first, last = prior.discriminator[0], prior.discriminator[2]
    with torch.no_grad():
        first.weight.copy_(torch.tensor([w1]))
        first.bias.fill_(b1)
        last.weight.fill_(w2)
        last.bias.fill_(b2)
    return prior


def test_discriminator_and_encoder_losses_by_hand():
    prior = one_unit_prior([1.0, -1.0], 0.0, 2.0, -1.0, squash="none")
    real = torch.tensor([[2.0, 1.0], [0.0, 1.0]])  # D: 2*relu(1) - 1 = 1, 2*relu(-1) - 1 = -1
    codes = torch.tensor([[3.0, 0.0]])  # D: 2*3 - 1 = 5
    loss, logs = prior.discriminator_loss(real, codes)
    assert loss.item() == pytest.approx((sp(-1) + sp(1)) / 2 + sp(5), rel=1e-6)
    assert logs["prior_d_real"].item() == pytest.approx(0.0) and logs["prior_d_fake"].item() == pytest.approx(5.0)
    assert prior.encoder_loss(codes).item() == pytest.approx(sp(-5), rel=1e-6)  # non-saturating -log sigmoid(D)


def test_gradient_penalty_by_hand():
    # where the unit is active, grad_z D = w2 * w1 = [2, -2]: ||grad||^2 = 8 at every such input
    prior = one_unit_prior([1.0, -1.0], 10.0, 2.0, 0.0, squash="none", gradient_penalty=0.5)
    real, codes = torch.zeros(3, 2), torch.ones(2, 2)
    loss, logs = prior.discriminator_loss(real, codes)
    assert logs["prior_gp"].item() == pytest.approx(8.0)
    plain = sp(-20.0) + sp(20.0)  # D = 2 * 10 on every input
    assert loss.item() == pytest.approx(plain + 0.5 * 8.0, rel=1e-5)


def test_prior_samples_and_squash():
    torch.manual_seed(0)
    uniform = AdversarialPrior(dim=3)
    z = uniform.sample_prior(5000, torch.zeros(1))
    assert z.shape == (5000, 3) and z.min() >= 0 and z.max() <= 1 and abs(z.mean().item() - 0.5) < 0.02
    assert uniform.squash == "sigmoid"
    torch.testing.assert_close(uniform.squash_codes(torch.zeros(2, 3)), torch.full((2, 3), 0.5))
    gaussian = AdversarialPrior(dim=3, prior="gaussian")
    g = gaussian.sample_prior(5000, torch.zeros(1))
    assert gaussian.squash == "none" and abs(g.std().item() - 1.0) < 0.05 and g.min() < 0
    assert [m.out_features for m in AdversarialPrior(dim=4).discriminator if isinstance(m, nn.Linear)] == [1000, 200, 1]


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="prior must be"):
        AdversarialPrior(prior="laplace")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gradient_penalty"):
        AdversarialPrior(gradient_penalty=-1.0)
    with pytest.raises(RuntimeError, match="setup"):
        AdversarialPrior().encoder_loss(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="built for codes of width 3"):
        AdversarialPrior(dim=3).setup(4)


def params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: nn.Module) -> list[bool]:
    return [not torch.equal(b, p) for b, p in zip(before, module.parameters())]


def test_discriminator_step_updates_only_the_discriminator():
    torch.manual_seed(0)
    encoder = nn.Linear(4, 3)
    prior = AdversarialPrior(dim=3, hidden_dims=[8, 4], lr=1e-2, gradient_penalty=1.0)
    enc_before, disc_before = params(encoder), params(prior.discriminator)
    logs = prior.discriminator_step(encoder(torch.randn(16, 4)))
    assert all(changed(disc_before, prior.discriminator))
    assert not any(changed(enc_before, encoder))
    assert all(p.grad is None for p in encoder.parameters())  # codes were detached
    assert set(logs) == {"prior_d_loss", "prior_d_real", "prior_d_fake", "prior_gp"}


def test_encoder_term_reaches_only_the_encoder():
    torch.manual_seed(0)
    encoder = nn.Linear(4, 3)
    prior = AdversarialPrior(dim=3, hidden_dims=[8])
    prior.encoder_loss(encoder(torch.randn(16, 4))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
    assert all(p.grad is None for p in prior.discriminator.parameters())


def test_dim_training_step_keeps_the_players_apart():
    """One engine-style step: D moves only by its own optimiser inside forward; the engine's
    optimiser (built from parameter_groups) moves the encoder and critics, never D."""
    torch.manual_seed(0)
    dim = DeepInfoMax(preset="L", gamma=1.0, local_critic=SeparableCritic(hidden_dim=8, embedding_dim=8),
                      prior=AdversarialPrior(hidden_dims=[16, 8], lr=1e-2), in_channels=1, image_size=8)
    disc = dim.prior.discriminator
    main_params = dim.parameter_groups()[0]["params"]
    assert not {id(p) for p in disc.parameters()} & {id(p) for p in main_params}
    assert dim.extra_optimizers() == {"prior_discriminator": dim.prior.optimizer}
    optimizer = torch.optim.SGD(main_params, lr=0.1)
    enc_before, disc_before = params(dim.encoder), params(disc)

    out = dim(Batch(inputs=torch.rand(8, 1, 8, 8)))  # the discriminator's step happens here
    assert all(changed(disc_before, disc)) and not any(changed(enc_before, dim.encoder))
    disc_after_its_step = params(disc)
    optimizer.zero_grad()
    out.loss.backward()
    assert all(p.grad is None for p in disc.parameters())  # the encoder's loss never reaches D
    optimizer.step()
    assert not any(changed(disc_after_its_step, disc))
    assert any(changed(enc_before, dim.encoder))
    assert "prior_d_loss" in out.logs and out.logs["prior_encoder_loss"] > 0


def test_no_discriminator_step_in_eval_or_no_grad():
    torch.manual_seed(0)
    dim = DeepInfoMax(preset="G", global_critic=None, in_channels=1, image_size=8,
                      prior=AdversarialPrior(hidden_dims=[8]))
    before = params(dim.prior.discriminator)
    with torch.no_grad():
        dim(Batch(inputs=torch.rand(4, 1, 8, 8)))
    dim.eval()(Batch(inputs=torch.rand(4, 1, 8, 8)))
    assert not any(changed(before, dim.prior.discriminator))


def test_prior_is_registered(registry):
    prior = registry.create("prior", "adversarial", prior="gaussian")
    assert isinstance(prior, AdversarialPrior) and prior.prior == "gaussian"
