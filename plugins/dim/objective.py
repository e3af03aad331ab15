"""Deep InfoMax (Hjelm et al., ICLR 2019): global MI, local MI and prior matching.

loss = alpha * L_global + beta * L_local + gamma * L_prior, where

- L_global: the estimator's loss on critic scores of (global code y_i, flattened local map
  M_j), positives i = j, negatives the other images of the batch (``[N, N]`` matrix).
- L_local: the estimator's loss on critic scores of (y_i, local feature at position p of
  image j): positives are the L positions of the same image (j = i), negatives every
  position of the other N - 1 images. All positions enter one :class:`Scores` per global
  code, so the local term is averaged over positions (see :func:`local_scores`).
- L_prior: the non-saturating encoder term of an adversarial prior matcher, whose
  discriminator takes its own optimiser step inside :meth:`DeepInfoMax.forward`.

Under torch.distributed the negatives come from the global batch: each process scores its
own global codes against the local maps of every process (gathered with gradients, as
:class:`~selfsup.plugins.common.samplers.InBatchNegatives` gathers keys), so its rows of the
score matrices are the rows a single process would compute for those images, and the
estimators' batch-wide terms (DV's log-mean-exp) run over every process's negatives: the
step is the one a single process takes on the global batch.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import Tensor

from selfsup import distributed
from selfsup.interfaces import Batch, Critic, Encoder, MIEstimator, Objective, PriorMatcher, Scores, StepOutput

from ..common.estimators import JSD
from .critics import ConcatCritic, SeparableCritic, score_global_batch, score_local_map, setup_critic
from .encoders import DIMConvEncoder
from .prior import AdversarialPrior

#: The paper's named settings: (alpha, beta, gamma).
PRESETS: dict[str, tuple[float, float, float]] = {
    "G": (1.0, 0.0, 1.0),
    "L": (0.0, 1.0, 0.1),
    "L+G": (0.5, 0.1, 0.1),
}

SameImage = Literal["exclude", "masked_constant"]


def same_sample(rows: int, columns: int, offset: int, device: torch.device | None = None) -> Tensor:
    """``[rows, columns]`` boolean mask, True at ``(i, offset + i)``: this process's samples
    (rows) among the global batch (columns), where they start at column ``offset``."""
    mask = torch.zeros(rows, columns, dtype=torch.bool, device=device)
    i = torch.arange(rows, device=device)
    mask[i, offset + i] = True
    return mask


def local_scores(scores: Tensor, same_image: SameImage = "exclude", masked_score: float = -10.0,
                 offset: int = 0) -> Scores:
    """Local-DIM :class:`Scores` from all-pairs scores ``[N, M, L]`` (M = N in one process).

    ``scores[i, j, p]`` scores global code i against position p of image j's local map; the
    N codes are images ``offset .. offset + N - 1`` of the M (under torch.distributed, M is
    the global batch and ``offset`` this process's first row). Row i of the result has
    positives ``scores[i, offset + i, :]`` (``[N, L]``: every position of its own image)
    and, as negatives:

    - ``exclude`` (the paper's equation): the positions of the *other* images only,
      ``[N, (M - 1) * L]`` in image-major order (j ascending, j != its image, then p).
    - ``masked_constant``: cortex_DIM's ``nce_loss``: all ``M * L`` positions of the batch,
      with the L same-image entries replaced by the constant ``masked_score`` (-10 there).
      They stay in every candidate set (InfoNCE sees 1 + M*L candidates, each masked entry
      adds e^-10 to its denominator) but carry no gradient.
    """
    if scores.dim() != 3 or scores.shape[1] % max(scores.shape[0], 1) or offset + scores.shape[0] > scores.shape[1]:
        raise ValueError(f"local scores must be [N, N, L] (or [N, M, L] with the N images at columns offset.. of "
                         f"M, a multiple of N), got shape {tuple(scores.shape)} with offset {offset}")
    n, m, positions = scores.shape
    if m < 2:
        raise ValueError("local DIM needs a batch of at least 2 images (negatives come from other images)")
    same = same_sample(n, m, offset, scores.device)
    positive = scores[same]  # [N, L], row i = scores[i, offset + i, :]
    if same_image == "exclude":
        negative = scores[~same].reshape(n, (m - 1) * positions)  # row-major: rows stay intact
    elif same_image == "masked_constant":
        negative = scores.masked_fill(same.unsqueeze(-1), masked_score).reshape(n, m * positions)
    else:
        raise ValueError(f"same_image must be 'exclude' or 'masked_constant', got {same_image!r}")
    return Scores(positive, negative)


class DeepInfoMax(Objective):
    """Deep InfoMax: maximise MI between a global code and the input's local/whole feature map.

    preset: ``G`` (alpha=1, beta=0, gamma=1), ``L`` (0, 1, 0.1) or ``L+G`` (0.5, 0.1, 0.1);
        ``alpha`` (global MI), ``beta`` (local MI) and ``gamma`` (prior matching) override it.
    encoder: any encoder returning a local map (default ``dim_conv`` for the data's size).
    estimator: any registered MI estimator (default ``jsd``); the global term uses its own
        copy, so stateful estimators (DV with MINE's moving average) keep separate state.
    local_critic: scores code vs each local position (default ``separable``: 1x1-conv and MLP
        embeddings, dot product); global_critic: code vs flattened local map (default
        ``concat``: MLP on the concatenation, two 512-unit hidden layers). A term whose
        weight is 0 builds no critic (a configured one is ignored), so one pipeline serves
        every preset.
    prior: the prior matcher (default ``adversarial``: uniform on [0, 1]^d).
    same_image / masked_score: how same-image positions enter the local negatives (see
        :func:`local_scores`).
    embed_layer: the representation ``embed`` returns for evaluation: ``code`` (the global
        vector) or, with encoders that expose ``layer_outputs`` (``dim_conv``), ``fc`` or
        ``conv`` -- the other layers the DIM paper evaluates.

    DIM trains on the un-augmented images ``batch.inputs`` (``num_views = 0``); the engine
    skips augmentation for it even when a transform is configured.
    """

    num_views = 0

    def __init__(
        self,
        encoder: Encoder | None = None,
        preset: Literal["G", "L", "L+G"] = "L",
        alpha: float | None = None,
        beta: float | None = None,
        gamma: float | None = None,
        estimator: MIEstimator | None = None,
        local_critic: Critic | None = None,
        global_critic: Critic | None = None,
        prior: PriorMatcher | None = None,
        same_image: SameImage = "exclude",
        masked_score: float = -10.0,
        embed_layer: Literal["code", "fc", "conv"] = "code",
        in_channels: int = 1,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")
        weights = [w if w is not None else p for w, p in zip((alpha, beta, gamma), PRESETS[preset])]
        if any(w < 0 for w in weights) or weights[0] == weights[1] == 0:
            raise ValueError(f"alpha, beta, gamma must be >= 0 with alpha or beta > 0; got {weights}")
        if same_image not in ("exclude", "masked_constant"):
            raise ValueError(f"same_image must be 'exclude' or 'masked_constant', got {same_image!r}")
        self.alpha, self.beta, self.gamma = (float(w) for w in weights)
        self.same_image, self.masked_score = same_image, float(masked_score)
        self.encoder = encoder if encoder is not None else DIMConvEncoder(in_channels, image_size)
        if embed_layer not in ("code", "fc", "conv"):
            raise ValueError(f"embed_layer must be 'code', 'fc' or 'conv', got {embed_layer!r}")
        if embed_layer != "code" and not hasattr(self.encoder, "layer_outputs"):
            raise ValueError(
                f"embed_layer {embed_layer!r} needs an encoder with layer_outputs (e.g. dim_conv); "
                f"{type(self.encoder).__name__} only gives the code: use embed_layer: code"
            )
        self.embed_layer = embed_layer
        code_dim, local_shape = self._probe_shapes(in_channels, image_size)
        self.estimator = estimator if estimator is not None else JSD()
        self.global_estimator = copy.deepcopy(self.estimator)
        self.local_critic = self.global_critic = None
        if self.beta > 0:
            self.local_critic = local_critic if local_critic is not None else SeparableCritic()
            setup_critic(self.local_critic, code_dim, local_shape[0])
        if self.alpha > 0:
            self.global_critic = global_critic if global_critic is not None else ConcatCritic()
            setup_critic(self.global_critic, code_dim, local_shape[0] * local_shape[1] * local_shape[2])
        self.prior = None
        if self.gamma > 0:
            self.prior = prior if prior is not None else AdversarialPrior()
            if hasattr(self.prior, "setup"):
                self.prior.setup(code_dim)

    @torch.no_grad()
    def _probe_shapes(self, in_channels: int, image_size: int) -> tuple[int, tuple[int, int, int]]:
        """Run the encoder once on zeros: code width D and local map shape (C, H, W)."""
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            features = self.encoder(torch.zeros(2, in_channels, image_size, image_size))
        finally:
            self.encoder.train(was_training)
        if features.local is None or features.local.dim() != 4:
            raise ValueError(
                f"DIM needs an encoder that returns a local feature map [N, C, H, W]; "
                f"{type(self.encoder).__name__} returned {None if features.local is None else tuple(features.local.shape)}"
            )
        c, h, w = features.local.shape[1:]
        return int(features.global_.shape[1]), (int(c), int(h), int(w))

    def forward(self, batch: Batch) -> StepOutput:
        if isinstance(batch.inputs, dict):
            raise ValueError("DIM trains on image tensors [N, C, H, W], not a mapping of modalities")
        features = self.encoder(batch.inputs)  # the un-augmented images; batch.views are unused
        code, local = features.global_, features.local  # [N, D], [N, C, H, W]
        if local is None:
            raise ValueError("DIM needs an encoder that returns a local feature map")
        loss = code.new_zeros(())
        logs: dict[str, Tensor | float] = {}
        offset = distributed.rank() * code.shape[0]  # this process's first row in the global batch
        if self.global_critic is not None:
            matrix = score_global_batch(self.global_critic, code, local.flatten(1))  # [N, M], M = W * N
            same = same_sample(code.shape[0], matrix.shape[1], offset, code.device)
            estimate = self.global_estimator(Scores.from_matrix(matrix, same))
            loss = loss + self.alpha * estimate.loss
            logs["mi_global"] = estimate.mi
        if self.local_critic is not None:
            scores = score_local_map(self.local_critic, code, local, gather=True)  # [N, M, H*W]
            estimate = self.estimator(local_scores(scores, self.same_image, self.masked_score, offset))
            loss = loss + self.beta * estimate.loss
            logs["mi_local"] = estimate.mi
        logs["mi"] = logs["mi_local"] if "mi_local" in logs else logs["mi_global"]
        if self.prior is not None:
            if self.training and torch.is_grad_enabled():
                logs.update(self.prior.discriminator_step(code.detach()))  # D's own optimiser step
            prior_loss = self.prior.encoder_loss(code)
            loss = loss + self.gamma * prior_loss
            logs["prior_encoder_loss"] = prior_loss.detach()
        return StepOutput(loss=loss, logs=logs)

    def embed(self, x: Tensor) -> Tensor:
        """``[N, C, H, W]`` -> ``[N, D]``: the code, or the layer named by ``embed_layer``."""
        if self.embed_layer == "code":
            return self.encoder(x).global_
        return self.encoder.layer_outputs(x)[self.embed_layer]  # type: ignore[operator]

    def parameter_groups(self) -> list[dict]:
        """Everything but the prior's discriminator, which its own optimiser steps."""
        trainable = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("prior.")]
        return [{"params": trainable}]

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optimizer = getattr(self.prior, "optimizer", None)
        return {"prior_discriminator": optimizer} if optimizer is not None else {}
