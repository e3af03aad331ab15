"""The conformance kit catches broken components, with messages that say what is wrong."""

from __future__ import annotations

import ast
import math
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.hookspecs import hookimpl
from selfsup.interfaces import Critic, Encoder, Estimate, Features, MIEstimator, NegativeSampler, PriorMatcher, Scores
from selfsup.plugins.common.critics import DotCritic
from selfsup.plugins.common.estimators import DonskerVaradhan, InfoNCE
from selfsup.plugins.common.samplers import MomentumQueue
from selfsup.plugins.moco.objective import MoCo
from selfsup.testing import (
    check_component, check_critic, check_encoder, check_estimator, check_objective, check_prior, check_sampler,
    check_transform, format_results, known_case_scores, plugin_registry, run_conformance,
)

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- encoders
class LinearEncoder(Encoder):
    """Flatten and project: ``[N, 1, 8, 8] -> [N, 4]``."""

    def __init__(self, declared_dim: int = 4, local: bool = False, batch_centred: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 4)
        self.out_dim = declared_dim
        self.return_local, self.batch_centred = local, batch_centred

    def forward(self, x):
        z = self.linear(x.flatten(1))
        if self.batch_centred:  # leaks batch statistics, even in eval mode
            z = z - z.mean(0, keepdim=True)
        return Features(z, x if self.return_local else None)


def test_encoder_check_passes_a_correct_encoder():
    check_encoder(LinearEncoder())


@pytest.mark.parametrize(("encoder", "message"), [
    (LinearEncoder(declared_dim=5), r"global_ should be \[N, out_dim\] = \(4, 5\), got \(4, 4\)"),
    (LinearEncoder(local=True), "returns a local map .* declares local_channels = None"),
    (LinearEncoder(batch_centred=True), "depends on the rest of the batch"),
])
def test_encoder_check_failures(encoder, message):
    with pytest.raises(AssertionError, match=message):
        check_encoder(encoder)


# --------------------------------------------------------------------------- critics
class OffByOnePair(DotCritic):
    """Dot critic whose pair() disagrees with forward()."""

    def pair(self, query, key):
        return super().pair(query, key) + 1.0


class KeyBlindCritic(Critic):
    """Ignores the keys' values (no gradient to them)."""

    def forward(self, query, keys):
        return query.sum(1, keepdim=True).expand(-1, keys.shape[0])


def test_critic_check_failures():
    check_critic(DotCritic(0.5))
    with pytest.raises(AssertionError, match="pair disagrees with the diagonal of forward"):
        check_critic(OffByOnePair())
    with pytest.raises(AssertionError, match="not differentiable with respect to the keys"):
        check_critic(KeyBlindCritic())


# --------------------------------------------------------------------------- estimators
class NaiveDV(MIEstimator):
    """DV written with exp/log: overflows at large scores."""

    def forward(self, scores):
        mi = scores.positive.mean() - torch.log(torch.exp(scores.negative).mean())
        return Estimate(-mi, mi.detach())


class OverclaimingInfoNCE(InfoNCE):
    """InfoNCE whose estimate is one nat too high: no longer a lower bound."""

    def forward(self, scores):
        estimate = super().forward(scores)
        return Estimate(estimate.loss, estimate.mi + 1.0)


def test_estimator_check_catches_overflow_and_a_broken_bound():
    check_estimator(InfoNCE())
    with pytest.raises(AssertionError, match="not finite"):
        check_estimator(NaiveDV())
    with pytest.raises(AssertionError, match="declares is_lower_bound but estimates"):
        check_estimator(OverclaimingInfoNCE())


def test_known_cases_have_the_stated_mi():
    # rho = 0.8: MI = -log(1 - 0.64) / 2; DV with the optimal critic recovers it
    scores, true_mi = known_case_scores(0.8)
    assert true_mi == pytest.approx(-0.5 * math.log(0.36))
    assert DonskerVaradhan()(scores).mi.item() == pytest.approx(true_mi, abs=0.06)
    # independent inputs: MI 0, and a fixed critic can only stay below it (about -0.12 nats here)
    independent, zero = known_case_scores(0.0)
    assert zero == 0.0 and -0.2 < InfoNCE()(independent).mi.item() < 0.0


# --------------------------------------------------------------------------- samplers
class ForgetfulQueue(NegativeSampler):
    """Keeps its keys in a plain attribute: they are not in state_dict, so a resume loses them."""

    def setup(self, dim, num_samples=None):
        self.keys = torch.randn(5, dim)

    def score(self, critic, query, key, index=None):
        return Scores(critic.pair(query, key)[:, None], critic(query, self.keys))

    def update(self, key, index=None):
        self.keys = key.detach()[:5].clone()


def test_sampler_check_round_trip():
    check_sampler(lambda: MomentumQueue(size=10))
    with pytest.raises(AssertionError, match="restored from state_dict scores differently"):
        check_sampler(ForgetfulQueue)


# --------------------------------------------------------------------------- priors
class UniformPrior(PriorMatcher):
    """A linear discriminator between codes and uniform [0, 1] samples."""

    def __init__(self, dim: int = 8, learns: bool = True) -> None:
        super().__init__()
        self.discriminator = nn.Linear(dim, 1)
        self.lr = 0.1 if learns else 0.0

    def encoder_loss(self, codes):
        return F.softplus(-self.discriminator(codes)).mean()

    def discriminator_step(self, codes):
        prior_samples = torch.rand_like(codes)
        loss = F.softplus(self.discriminator(codes)).mean() + F.softplus(-self.discriminator(prior_samples)).mean()
        self.discriminator.zero_grad()
        loss.backward()
        with torch.no_grad():  # plain SGD (torch.optim's first use costs seconds of imports)
            for p in self.discriminator.parameters():
                p.sub_(self.lr * p.grad)
        return {"disc_loss": loss.item()}


def test_prior_check():
    check_prior(UniformPrior())
    with pytest.raises(AssertionError, match="did not change the discriminator"):
        check_prior(UniformPrior(learns=False))


# --------------------------------------------------------------------------- transforms and objectives
class GlobalRandomViews(nn.Module):
    """Draws noise from the global RNG instead of the generator: not reproducible."""

    def forward(self, images, num_views=2, generator=None):
        return [(images + 0.01 * torch.rand_like(images)).clamp(0, 1) for _ in range(num_views)]


def test_transform_check_wants_reproducible_views():
    with pytest.raises(AssertionError, match="differs between two calls with the same generator seed"):
        check_transform(GlobalRandomViews())


class FrozenEncoderMoCo(MoCo):
    """MoCo that (wrongly) detaches the encoder's output: only the projector learns."""

    def _query(self, x):
        return F.normalize(self.projector(self.encoder(x).global_.detach()), dim=1)


def test_objective_check_wants_the_encoder_to_learn():
    def make(cls):
        return cls(LinearEncoder(), sampler=MomentumQueue(32), embedding_dim=8)

    check_objective(make(MoCo))
    with pytest.raises(AssertionError, match="left the encoder unchanged"):
        check_objective(make(FrozenEncoderMoCo))


# --------------------------------------------------------------------------- the registry-wide run
class Needy(DotCritic):
    """A critic with a required argument and no conformance_params."""

    def __init__(self, width: int) -> None:
        super().__init__()


class OptedOut(DotCritic):
    """A critic that needs special inputs."""

    conformance_params = "scores local maps, tested in its own suite"


def _register(registry):
    registry.register("critic", "kit_off_by_one", OffByOnePair)
    registry.register("critic", "kit_needy", Needy)
    registry.register("critic", "kit_opted_out", OptedOut)
    registry.register("estimator", "kit_naive_dv", NaiveDV)


def test_run_conformance_reports_each_component_without_stopping():
    plugin = types.ModuleType("kit_test_plugin")
    plugin.selfsup_register = hookimpl(_register)
    registry = plugin_registry(plugin)
    results = {r.name: r for r in run_conformance(registry, package="kit-test-plugin")}
    assert set(results) == {"kit_off_by_one", "kit_needy", "kit_opted_out", "kit_naive_dv"}
    assert results["kit_off_by_one"].status == "fail" and "pair disagrees" in results["kit_off_by_one"].detail
    assert results["kit_needy"].status == "fail"
    assert "missing required parameter" in results["kit_needy"].detail
    assert "conformance_params" in results["kit_needy"].detail
    assert results["kit_opted_out"].status == "skip" and "local maps" in results["kit_opted_out"].detail
    assert check_component(registry, "critic", "dot").passed
    table = format_results(results.values())
    assert table.splitlines()[0].split() == ["kind", "name", "package", "result", "detail"]
    assert "0 passed, 3 failed, 1 skipped" in table


def test_kit_imports_neither_pytest_nor_plugins():
    imported = set()
    for path in (ROOT / "core" / "testing").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "torch" in imported  # the scan found the kit's imports
    assert not any(m.startswith(("pytest", "selfsup.plugins", "plugins")) for m in imported)
