"""MoCo v1/v2 (He et al. 2020; Chen et al. 2020): momentum contrast with a queue of keys."""

from __future__ import annotations

from typing import Literal

from torch import nn

from selfsup.interfaces import Batch, Critic, Encoder, Head, MIEstimator, NegativeSampler, StepOutput

from ..common.contrast import ContrastStep
from ..common.critics import DotCritic
from ..common.estimators import InfoNCE
from ..common.heads import MLPHead, build_head, check_embedding_dim
from ..common.momentum import cosine_momentum, frozen_copy
from ..common.samplers import MomentumQueue
from ..common.split_batchnorm import convert_split_batchnorm
from .base import MomentumContrast, check_momentum, check_split_bn


class MoCo(MomentumContrast):
    """MoCo: a query encoder trained against a momentum key encoder and a queue of keys.

    Defaults follow MoCo v2 on small data: MLP projection head to 128-d, dot critic on
    L2-normalised vectors with temperature 0.2, InfoNCE, queue of 4,096 keys, momentum 0.99.
    Any critic, estimator or sampler from the registry can replace the defaults.

    projector: ``mlp`` (v2), ``linear`` (v1), ``none``, or a head (``{name: mlp, ...}``; a ready
        ``nn.Module`` in Python) whose output width is then the embedding width.
    symmetric: also contrast view 2's query against view 1's key and average (as in the
        MoCo CIFAR demo's symmetric loss); both keys are enqueued.
    momentum_schedule: ``constant`` or ``cosine`` (from ``momentum`` to 1 over training).
    shuffle_bn: encode keys with shuffle-BN when batch norm sees more than one chunk of the
        global batch (several processes, or ``split_bn`` > 1): the batch is permuted with a
        permutation from rank 0, encoded, and unpermuted.
    split_bn: batch-norm layers of encoder and projector compute their statistics over this
        many equal chunks of the local batch (:class:`SplitBatchNorm`), emulating as many
        GPUs on one device, as in the MoCo CIFAR demo. 1 = plain batch norm.
    """

    def __init__(
        self,
        encoder: Encoder,
        critic: Critic | None = None,
        estimator: MIEstimator | None = None,
        sampler: NegativeSampler | None = None,
        projector: Literal["mlp", "linear", "none"] | Head | nn.Module = "mlp",
        projector_hidden_dim: int | None = None,
        embedding_dim: int = 128,
        momentum: float = 0.99,
        momentum_schedule: Literal["constant", "cosine"] = "constant",
        symmetric: bool = False,
        shuffle_bn: bool = True,
        split_bn: int = 1,
        num_train: int = 0,
    ) -> None:
        super().__init__()
        check_embedding_dim(embedding_dim)
        self.base_momentum = check_momentum(momentum)
        self.split_bn = check_split_bn(split_bn)
        self.encoder = convert_split_batchnorm(encoder, self.split_bn)
        if isinstance(projector, str) and projector == "none":
            self.projector: nn.Module = nn.Identity()
            embedding_dim = encoder.out_dim
        else:
            default = MLPHead(embedding_dim, projector_hidden_dim, 2 if projector == "mlp" else 1, batch_norm=False)
            head, embedding_dim = build_head(default if isinstance(projector, str) else projector, encoder.out_dim,
                                             default)
            self.projector = convert_split_batchnorm(head, self.split_bn)
        self.key_encoder = frozen_copy(self.encoder)
        self.key_projector = frozen_copy(self.projector)
        self.contrast = ContrastStep.attach(
            self, critic if critic is not None else DotCritic(temperature=0.2),
            estimator if estimator is not None else InfoNCE(),
            sampler if sampler is not None else MomentumQueue(4096), embedding_dim, num_train)
        self.momentum_schedule = momentum_schedule
        self.symmetric = symmetric
        self.shuffle_bn = shuffle_bn

    def forward(self, batch: Batch) -> StepOutput:
        if len(batch.views) < 2:
            raise ValueError(f"MoCo needs 2 augmented views per batch, got {len(batch.views)}")
        view1, view2 = batch.views[0], batch.views[1]
        query1, key2 = self._query(view1), self._key(view2)
        loss, logs = self._contrast(query1, key2, batch.index)
        if self.symmetric:
            query2, key1 = self._query(view2), self._key(view1)
            loss2, _ = self._contrast(query2, key1, batch.index)
            loss = (loss + loss2) / 2
        return StepOutput(loss=loss, logs=logs)

    def current_momentum(self, step: int, total_steps: int) -> float:
        if self.momentum_schedule == "cosine":
            return cosine_momentum(self.base_momentum, step, total_steps)
        return self.base_momentum


def moco_v2(
    encoder: Encoder,
    critic: Critic | None = None,
    estimator: MIEstimator | None = None,
    sampler: NegativeSampler | None = None,
    queue_size: int = 65536,
    projector_hidden_dim: int | None = None,
    embedding_dim: int = 128,
    temperature: float = 0.2,
    momentum: float = 0.999,
    symmetric: bool = False,
    shuffle_bn: bool = True,
    split_bn: int = 1,
    num_train: int = 0,
) -> MoCo:
    """MoCo v2 preset (Chen et al. 2020): MLP head, T=0.2, queue of 65,536 keys, momentum 0.999.

    The paper's ImageNet settings; ``sampler`` (default: a momentum queue of ``queue_size``)
    and ``critic`` (default: dot product at ``temperature`` on normalised vectors) may be
    replaced. For small data sets shrink the queue below the training-set size and lower the
    momentum (examples/moco_v2.yaml: digits, 1,024 keys, momentum 0.99).
    """
    return MoCo(
        encoder,
        critic=critic if critic is not None else DotCritic(temperature=temperature),
        estimator=estimator,
        sampler=sampler if sampler is not None else MomentumQueue(queue_size),
        projector="mlp",
        projector_hidden_dim=projector_hidden_dim,
        embedding_dim=embedding_dim,
        momentum=momentum,
        symmetric=symmetric,
        shuffle_bn=shuffle_bn,
        split_bn=split_bn,
        num_train=num_train,
    )
