"""Adversarial prior matching (Deep InfoMax's gamma term) as a two-player min-max game.

A discriminator D tells prior samples z ~ P from (squashed) codes y = E(x) ~ Q. It is
trained by its *own* optimiser on detached codes::

    L_D = E_P[softplus(-D(z))] + E_Q[softplus(D(y))]    (+ gradient penalty)

and the encoder receives the non-saturating generator term, computed with D's parameters
detached so that it never produces gradients for D::

    L_E = E_Q[softplus(-D(y))] = -E_Q[log sigmoid(D(y))]

The gradient penalty is cortex_DIM's: ``penalty * mean_i ||grad_z D(z_i)||^2``, averaged
over prior and code inputs (Mescheder et al. 2018).

Under torch.distributed the discriminator's step sees the global batch: the codes of every
process are gathered and the prior samples are drawn on rank 0 and broadcast, so every
process takes the same step and the discriminators stay identical (DDP does not touch them).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from selfsup import distributed
from selfsup.interfaces import PriorMatcher


def discriminator_mlp(dim: int, hidden_dims: tuple[int, ...]) -> nn.Sequential:
    """``[N, dim] -> [N]`` logits: Linear-ReLU per hidden width, then Linear to 1."""
    layers: list[nn.Module] = []
    width = dim
    for hidden in hidden_dims:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers += [nn.Linear(width, 1), nn.Flatten(0)]
    return nn.Sequential(*layers)


class AdversarialPrior(PriorMatcher):
    """Match codes to a prior with a discriminator MLP (1000-200-1) that has its own Adam.

    prior: ``uniform`` on [0, 1]^d (DIM's default) or standard ``gaussian``.
    squash: map codes before matching; ``auto`` = sigmoid for the uniform prior (as
        cortex_DIM), identity for the Gaussian. The encoder's code itself is unchanged.
    gradient_penalty: weight of the discriminator's gradient penalty (0 disables it;
        cortex_DIM uses 1.0).
    lr, betas: the discriminator's Adam. ``setup(dim)`` builds D and its optimiser; the
    objective that owns the matcher calls it with its code width.
    """

    conformance_params = {"dim": 8, "hidden_dims": [16]}

    def __init__(
        self,
        dim: int | None = None,
        prior: Literal["uniform", "gaussian"] = "uniform",
        hidden_dims: list[int] | None = None,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        gradient_penalty: float = 0.0,
        squash: Literal["auto", "sigmoid", "none"] = "auto",
    ) -> None:
        super().__init__()
        if prior not in ("uniform", "gaussian"):
            raise ValueError(f"prior must be 'uniform' or 'gaussian', got {prior!r}")
        if squash not in ("auto", "sigmoid", "none"):
            raise ValueError(f"squash must be 'auto', 'sigmoid' or 'none', got {squash!r}")
        hidden = tuple(hidden_dims) if hidden_dims is not None else (1000, 200)
        if not hidden or any(int(h) <= 0 for h in hidden):
            raise ValueError(f"hidden_dims must be positive widths, got {hidden_dims!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if gradient_penalty < 0:
            raise ValueError(f"gradient_penalty must be >= 0, got {gradient_penalty}")
        self.prior = prior
        self.hidden_dims = hidden
        self.lr, self.betas = float(lr), (float(betas[0]), float(betas[1]))
        self.gradient_penalty = float(gradient_penalty)
        self.squash = "sigmoid" if squash == "auto" and prior == "uniform" else ("none" if squash == "auto" else squash)
        self.dim: int | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        if dim is not None:
            self.setup(dim)

    def setup(self, dim: int) -> None:
        """Build the discriminator ``[N, dim] -> [N]`` and its optimiser (once)."""
        if dim <= 0:
            raise ValueError(f"code width must be positive, got {dim}")
        if self.dim is not None:
            if self.dim != dim:
                raise ValueError(f"prior matcher was built for codes of width {self.dim}, not {dim}")
            return
        self.dim = int(dim)
        self.discriminator = discriminator_mlp(self.dim, self.hidden_dims)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=self.betas)

    def _ready(self) -> nn.Module:
        if self.dim is None:
            raise RuntimeError("AdversarialPrior.setup(dim) was not called by the objective")
        return self.discriminator

    # ------------------------------------------------------------------ pieces
    def squash_codes(self, codes: Tensor) -> Tensor:
        """codes ``[N, D]`` -> the values compared with prior samples ``[N, D]``."""
        return torch.sigmoid(codes) if self.squash == "sigmoid" else codes

    def sample_prior(self, n: int, like: Tensor) -> Tensor:
        """``[n, D]`` samples of the prior, with ``like``'s device and dtype."""
        self._ready()
        shape = (n, int(self.dim))  # type: ignore[arg-type]
        if self.prior == "uniform":
            return torch.rand(shape, device=like.device, dtype=like.dtype)
        return torch.randn(shape, device=like.device, dtype=like.dtype)

    def discriminator_loss(self, prior_samples: Tensor, codes: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """L_D on prior samples ``[P, D]`` and detached, squashed codes ``[N, D]``."""
        disc = self._ready()
        real, fake = disc(prior_samples), disc(codes)  # [P], [N] logits
        loss = F.softplus(-real).mean() + F.softplus(fake).mean()
        logs = {"prior_d_loss": loss.detach(), "prior_d_real": real.detach().mean(), "prior_d_fake": fake.detach().mean()}
        if self.gradient_penalty > 0:
            penalty = 0.5 * (self._grad_penalty(prior_samples) + self._grad_penalty(codes))
            loss = loss + self.gradient_penalty * penalty
            logs["prior_gp"] = penalty.detach()
        return loss, logs

    def _grad_penalty(self, inputs: Tensor) -> Tensor:
        """mean_i ||d D(x_i) / d x_i||^2 for inputs ``[N, D]`` (differentiable w.r.t. D)."""
        x = inputs.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.discriminator(x).sum(), x, create_graph=True)
        return grad.pow(2).sum(1).mean()

    # ------------------------------------------------------------------ the game
    def discriminator_step(self, codes: Tensor) -> dict[str, float]:
        """One Adam step of D on detached codes ``[N, D]`` against as many prior samples.

        Under torch.distributed: on the codes of every process ``[W*N, D]`` and ``W*N`` prior
        samples drawn on rank 0, the same step on every process.
        """
        self._ready()
        assert self.optimizer is not None
        with torch.enable_grad(), torch.autocast(codes.device.type, enabled=False):
            fake = self.squash_codes(distributed.gather(codes.detach().float()))  # [W*N, D]
            prior_samples = distributed.broadcast_from_main(self.sample_prior(fake.shape[0], fake))
            loss, logs = self.discriminator_loss(prior_samples, fake)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)  # leave no gradients behind for others to see
        return {k: float(v) for k, v in logs.items()}

    def encoder_loss(self, codes: Tensor) -> Tensor:
        """Non-saturating term ``E_Q[softplus(-D(squash(y)))]`` for codes ``[N, D]``.

        D's parameters enter detached: the term's gradient reaches the encoder only.
        """
        disc = self._ready()
        frozen = {name: p.detach() for name, p in disc.named_parameters()}
        logits = functional_call(disc, frozen, (self.squash_codes(codes),))  # [N]
        return F.softplus(-logits).mean()
