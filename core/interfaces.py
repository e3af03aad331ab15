"""The five part interfaces, the bundle interface, the interfaces of the other component
kinds (view transform, diagnostic, metrics logger) and the small dataclasses between them.

A training step flows

    Batch -> Objective.forward -> Encoder -> Features -> Critic -> scores
          -> NegativeSampler.score -> Scores -> MIEstimator -> Estimate -> StepOutput

Shapes use N for the batch, D for an embedding width, K for negatives per query, P for
positives per query, C/H/W for a local feature map.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


# --------------------------------------------------------------------------- dataclasses
@dataclass
class Features:
    """What an encoder returns.

    global_: ``[N, D]`` one vector per sample.
    local: ``[N, C, H, W]`` a local feature map, or ``None`` when the encoder has none.
    """

    global_: Tensor
    local: Tensor | None = None


@dataclass
class Scores:
    """Critic scores of positive and negative pairs, in the one layout every estimator reads.

    positive: ``[N, P]`` scores of the P positive pairs of each of N queries (P >= 1).
    negative: ``[N, K]`` scores of the K negatives of each query, or ``None`` when the
        objective has no negatives.

    Use :meth:`from_matrix` to build it from a full ``[N, M]`` score matrix and a mask of
    positives (every row must hold the same number of positives).
    """

    positive: Tensor
    negative: Tensor | None = None

    def __post_init__(self) -> None:
        if self.positive.dim() != 2:
            raise ValueError(f"Scores.positive must be [N, P], got shape {tuple(self.positive.shape)}")
        if self.negative is not None:
            if self.negative.dim() != 2 or self.negative.shape[0] != self.positive.shape[0]:
                raise ValueError(
                    "Scores.negative must be [N, K] with the same N as positive "
                    f"{tuple(self.positive.shape)}, got {tuple(self.negative.shape)}"
                )

    @classmethod
    def from_matrix(cls, matrix: Tensor, positive_mask: Tensor, negative_mask: Tensor | None = None) -> "Scores":
        """Split a score matrix ``[N, M]`` by a boolean ``positive_mask [N, M]``.

        Entries that are neither positive nor in ``negative_mask`` (default: every
        non-positive entry) are dropped. Each row must hold the same number of positives and
        of negatives.
        """
        if matrix.shape != positive_mask.shape:
            raise ValueError(f"mask {tuple(positive_mask.shape)} does not match scores {tuple(matrix.shape)}")
        positive_mask = positive_mask.bool()
        negative_mask = ~positive_mask if negative_mask is None else negative_mask.bool() & ~positive_mask
        n = matrix.shape[0]
        n_pos = positive_mask.sum(1)
        n_neg = negative_mask.sum(1)
        if n and not (bool((n_pos == n_pos[0]).all()) and bool((n_neg == n_neg[0]).all())):
            raise ValueError("every row must hold the same number of positives and of negatives")
        positive = matrix[positive_mask].view(n, -1)  # [N, P], row-major order keeps rows intact
        negative = matrix[negative_mask].view(n, -1)  # [N, K]
        return cls(positive, negative if negative.shape[1] > 0 else None)

    @property
    def num_candidates(self) -> int:
        """Candidates per positive for a classification-style bound: 1 + K."""
        return 1 + (0 if self.negative is None else self.negative.shape[1])


@dataclass
class Estimate:
    """What an MI estimator returns: a loss to minimise and the MI estimate it implies (nats)."""

    loss: Tensor
    mi: Tensor


@dataclass
class Batch:
    """One training batch as the objective sees it, already on the training device.

    inputs: ``[N, C, H, W]`` un-augmented images (or a mapping modality -> tensor for
        multimodal data).
    views: augmented views, each shaped like ``inputs`` (empty when no augmentation runs).
    labels: ``[N]`` class labels, or ``None`` for unlabelled data.
    index: ``[N]`` the samples' positions in the training set (memory banks use it).
    """

    inputs: Tensor | dict[str, Tensor]
    views: list[Tensor] = field(default_factory=list)
    labels: Tensor | None = None
    index: Tensor | None = None

    @property
    def size(self) -> int:
        first = next(iter(self.inputs.values())) if isinstance(self.inputs, dict) else self.inputs
        return int(first.shape[0])


@dataclass
class StepOutput:
    """What ``Objective.forward`` returns: the loss to back-propagate and scalars to log."""

    loss: Tensor
    logs: dict[str, Tensor | float] = field(default_factory=dict)


# --------------------------------------------------------------------------- parts
@dataclass
class LibraryModel:
    """An encoder's network as a model of another library (what :meth:`Encoder.library_model`
    returns), so that the trained weights load outside selfsup.

    library: ``"timm"`` or ``"torchvision"``. model: the library's model name (``resnet18``).
    kwargs: the keyword arguments of the library's constructor (``timm.create_model(model,
    **kwargs)``, ``torchvision.models.<model>(**kwargs)``) that give ``module``'s architecture.
    module: the network whose ``state_dict`` is exported (``backbone.safetensors``).
    changes: sub-modules replaced after construction, attribute name -> the Python expression
    of the replacement (e.g. ``{"fc": "torch.nn.Identity()"}``); empty when there are none.
    """

    library: str
    model: str
    kwargs: dict[str, Any]
    module: nn.Module
    changes: dict[str, str] = field(default_factory=dict)


class Encoder(nn.Module, abc.ABC):
    """Data -> :class:`Features`.

    Subclasses set ``out_dim`` (width D of ``Features.global_``) and, when they return a
    local map, ``local_channels`` (C of ``Features.local``).
    """

    out_dim: int
    local_channels: int | None = None

    @abc.abstractmethod
    def forward(self, x: Tensor) -> Features:
        """x: ``[N, C, H, W]`` (or the encoder's documented input) -> Features."""

    def library_model(self) -> LibraryModel | None:
        """The network as another library's model (timm, torchvision), or None (the default).

        When an encoder returns one, the run's export also writes that model's own state
        dict (``backbone.safetensors``), loadable without selfsup.
        """
        return None


class Critic(nn.Module, abc.ABC):
    """Scores pairs of representations.

    ``higher_is_similar`` says whether a larger score means a more similar pair (a
    similarity) or a less similar one (a distance). Estimators expect similarities; a
    distance critic is negated by :meth:`similarity`.
    """

    higher_is_similar: ClassVar[bool] = True

    @abc.abstractmethod
    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        """All pairs: query ``[N, D]``, keys ``[M, D]`` -> scores ``[N, M]``."""

    def pair(self, query: Tensor, key: Tensor) -> Tensor:
        """Aligned pairs: query ``[N, D]``, key ``[N, D]`` -> scores ``[N]``.

        The default takes the diagonal of :meth:`forward`; critics override it with an
        O(N) form.
        """
        return torch.diagonal(self.forward(query, key))

    def similarity(self, query: Tensor, keys: Tensor) -> Tensor:
        """Like ``forward`` but always higher-is-more-similar."""
        scores = self.forward(query, keys)
        return scores if self.higher_is_similar else -scores


class MIEstimator(nn.Module, abc.ABC):
    """Turns :class:`Scores` into a loss and an MI estimate (nats).

    Class attributes document the estimator for users and for the conformance checks:
    ``needs_negatives`` and ``is_lower_bound``.
    """

    needs_negatives: ClassVar[bool] = True
    is_lower_bound: ClassVar[bool] = True

    @abc.abstractmethod
    def forward(self, scores: Scores) -> Estimate:
        """Scores (positive ``[N, P]``, negative ``[N, K]``) -> Estimate(loss [], mi [])."""


class NegativeSampler(nn.Module, abc.ABC):
    """Supplies negatives and turns a critic plus query/key pairs into :class:`Scores`.

    State (queue, bank, pointers) lives in registered buffers, so it is saved and restored
    with ``state_dict`` and travels with the model in checkpoints.
    """

    def setup(self, dim: int, num_samples: int | None = None) -> None:
        """Called once by the objective that owns the sampler, before training or loading.

        dim: width D of the keys; num_samples: training-set size (memory banks need it).
        Samplers allocate their state buffers here.
        """

    @abc.abstractmethod
    def score(self, critic: Critic, query: Tensor, key: Tensor, index: Tensor | None = None) -> Scores:
        """query ``[N, D]``, key ``[N, D]`` (row i is the positive of query i), index ``[N]``."""

    @torch.no_grad()
    def update(self, key: Tensor, index: Tensor | None = None) -> None:
        """Called after the loss: enqueue keys / update bank slots. key ``[N, D]``."""


class PriorMatcher(nn.Module, abc.ABC):
    """Adversarial prior matching: pushes codes toward a prior with a discriminator.

    The discriminator has its own optimiser; :meth:`discriminator_step` trains it on
    detached codes, :meth:`encoder_loss` is the term added to the encoder's loss.
    """

    @abc.abstractmethod
    def encoder_loss(self, codes: Tensor) -> Tensor:
        """codes ``[N, D]`` -> scalar loss for the encoder (discriminator frozen)."""

    @abc.abstractmethod
    def discriminator_step(self, codes: Tensor) -> dict[str, float]:
        """One optimiser step of the discriminator on detached codes ``[N, D]``; returns logs."""


class Objective(nn.Module, abc.ABC):
    """A bundle: wires parts into one training objective.

    ``forward(batch)`` returns the loss; ``after_step()`` runs after the optimiser step
    (momentum updates, enqueueing); ``embed(x)`` gives the representation that evaluation
    uses (the encoder's global vector, before projection heads).
    """

    #: How many augmented views ``forward`` expects in ``batch.views``.
    num_views: ClassVar[int] = 2
    #: Whether the objective needs ``batch.labels``.
    needs_labels: ClassVar[bool] = False

    @abc.abstractmethod
    def forward(self, batch: Batch) -> StepOutput:
        ...

    def after_step(self, step: int, total_steps: int) -> None:
        """Hook after each optimiser step; ``step`` counts from 0."""

    @abc.abstractmethod
    def embed(self, x: Tensor) -> Tensor:
        """Inputs -> ``[N, D]`` representation for evaluation."""

    def parameter_groups(self) -> list[dict]:
        """Optimiser parameter groups. Default: every trainable parameter in one group.

        A group may carry ``lr_scale`` (multiplies the configured learning rate) or
        ``weight_decay``; the engine honours both.
        """
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimisers the objective steps itself (e.g. a prior matcher's discriminator).

        The engine checkpoints them; it never steps them.
        """
        return {}


class Head(abc.ABC):
    """A head (registry kind ``head``): builds the module ``[N, in_dim] -> [N, out_dim]`` that a
    bundle puts on top of its encoder (a projector) or of a projector (a predictor).

    A bundle's ``projector`` / ``predictor`` parameter takes a head (``{name: mlp, ...}`` in a
    pipeline) or, in Python, a ready ``nn.Module``; the bundle calls :meth:`build` with the
    width it feeds the head, which the pipeline need not know.
    """

    #: Width of the head's output.
    out_dim: int

    @abc.abstractmethod
    def build(self, in_dim: int) -> nn.Module:
        """The head's module for inputs ``[N, in_dim]``; returns ``[N, out_dim]``."""


class MetricsLogger(abc.ABC):
    """A metrics sink (registry kind ``logger``), listed in ``trainer.loggers``.

    The trainer opens it on the main process only, then hands it every row: ``kind`` is
    ``"train"`` (step, epoch, train_seconds, lr, loss and the objective's logs, images_per_s,
    monitor diagnostics) or ``"eval"`` (step, epoch, train_seconds, eval_seconds, knn_acc and
    diagnostics at ``eval.every_*``). Values are Python numbers. A resumed run opens the
    same folder again with ``resume=True``: append, do not truncate.
    """

    def open(self, run_dir: Path, config: Mapping[str, Any], resume: bool) -> None:
        """Start writing for the run in ``run_dir`` (``config``: the resolved pipeline)."""

    @abc.abstractmethod
    def log(self, row: Mapping[str, Any], kind: str) -> None:
        ...

    def close(self) -> None:
        """Flush and release files; called once at the end of ``fit`` (also on errors)."""


class ViewTransform(nn.Module, abc.ABC):
    """Batch-wise augmentation on the training device: one batch -> several views.

    Randomness comes only from the ``generator`` argument, so a run is reproducible and a
    resumed run draws the same augmentations.
    """

    @abc.abstractmethod
    def forward(self, images: Tensor, num_views: int, generator: torch.Generator | None = None) -> list[Tensor]:
        """images ``[N, C, H, W]`` float in [0, 1] -> ``num_views`` tensors ``[N, C, H, W]``."""


@dataclass
class ProbeEmbeddings:
    """What a diagnostic measures: embeddings of the monitor's fixed probe batch.

    embeddings: ``[N, D]`` of the un-augmented probe inputs, from ``monitor.source``
        (``objective.embed`` or ``objective.project``).
    view1, view2: ``[N, D]`` of two augmented views, same source (row i of each is a positive
        pair), or ``None`` when the pipeline has no augmentation.
    labels: ``[N]`` class labels of the probe samples (-1 where unknown), or ``None``.
    representation: ``[N, D']`` ``objective.embed`` of the probe inputs (the same tensor as
        ``embeddings`` when the source is ``embed``): what label-based diagnostics score.
    """

    embeddings: Tensor
    view1: Tensor | None = None
    view2: Tensor | None = None
    labels: Tensor | None = None
    representation: Tensor | None = None


class Diagnostic(abc.ABC):
    """A measurement of embeddings (registry kind ``diagnostic``): ProbeEmbeddings -> float.

    ``needs_views`` / ``needs_labels`` say whether it reads ``view1``/``view2`` or ``labels``;
    the monitor checks them before training starts.
    """

    needs_views: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(self, probe: ProbeEmbeddings) -> float:
        ...
