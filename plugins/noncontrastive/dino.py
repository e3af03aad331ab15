"""DINO (Caron et al. 2021): self-distillation with no labels.

A student (encoder + DINO head) is trained to match a momentum teacher's output distribution
over K prototypes across views: for every teacher view t (the global crops) and every other
student view s, the cross-entropy ``-sum_k q_t[k] log p_s[k]`` with

    q_t = softmax((g_teacher(t) - c) / tau_t)      (centred and sharpened, no gradient)
    p_s = softmax(g_student(s) / tau_s)

What keeps it from collapsing: the centre c (an EMA of the teacher's outputs over the
global batch) stops one prototype from dominating, and sharpening (tau_t < tau_s) stops
the output from becoming uniform. Without centering it collapses to a one-hot output;
without sharpening (tau_t = tau_s) to a uniform one (``centering`` / ``sharpening`` switches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed
from selfsup.interfaces import Batch, Critic, Encoder, Objective, StepOutput

from ..common.critics import CosineCritic, check_scores_width
from ..common.momentum import cosine_momentum, frozen_copy, momentum_update
from .base import PredictionLoss


class DINOHead(nn.Module):
    """MLP ``in_dim -> hidden -> ... -> bottleneck``, then the scores of the bottleneck output
    against ``out_dim`` learned prototypes ``[K, bottleneck]`` under a similarity (any critic's
    matrix form): ``[N, in_dim] -> [N, out_dim]``.

    With the default cosine (T = 1) this is the paper's head: an L2-normalised bottleneck and
    a weight-normalised last layer whose norm is fixed at 1, so the logits are cosines in
    [-1, 1]. Other similarities score the raw bottleneck vectors against the raw prototypes
    (``dot``: ``z . w``; ``neg_sq_euclidean``: ``-|z - w|^2``; ...).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 512, bottleneck_dim: int = 64,
                 layers: int = 3, similarity: Critic | None = None) -> None:
        super().__init__()
        if min(out_dim, hidden_dim, bottleneck_dim) <= 0 or layers < 1:
            raise ValueError(f"out_dim, hidden_dim and bottleneck_dim must be positive and layers >= 1, got "
                             f"{out_dim}, {hidden_dim}, {bottleneck_dim}, {layers}")
        blocks: list[nn.Module] = []
        width = in_dim
        for _ in range(layers - 1):
            blocks += [nn.Linear(width, hidden_dim), nn.GELU()]
            width = hidden_dim
        blocks.append(nn.Linear(width, bottleneck_dim))
        self.mlp = nn.Sequential(*blocks)
        self.prototypes = nn.Parameter(nn.Linear(bottleneck_dim, out_dim, bias=False).weight.detach().clone())
        self.similarity = check_scores_width(similarity if similarity is not None else CosineCritic(temperature=1.0),
                                             bottleneck_dim, "bottleneck vectors and prototypes")

    def forward(self, x: Tensor) -> Tensor:
        return self.similarity.similarity(self.mlp(x), self.prototypes)  # [N, out_dim]


def teacher_probabilities(logits: Tensor, center: Tensor | None, temperature: float) -> Tensor:
    """``softmax((logits - center) / temperature)`` over the last dim (``[N, K] -> [N, K]``)."""
    if center is not None:
        logits = logits - center
    return F.softmax(logits.float() / temperature, dim=-1)


def dino_loss(student: list[Tensor], teacher: list[Tensor], student_temperature: float) -> PredictionLoss:
    """Cross-entropy of teacher distributions and student predictions over every pair of
    (teacher view i, student view j), j != i, averaged over pairs and samples.

    student: V logits ``[N, K]`` (the global views first); teacher: G probabilities ``[N, K]``
    (G <= V, no gradient). similarity: the mean of ``sum_k q log p`` (minus the loss).
    """
    if not teacher or len(student) < 2:
        raise ValueError(f"DINO needs at least one teacher view and two student views, got {len(teacher)} and "
                         f"{len(student)}")
    log_p = [F.log_softmax(s.float() / student_temperature, dim=-1) for s in student]
    terms = [-(q * log_p[j]).sum(-1).mean() for i, q in enumerate(teacher) for j in range(len(student)) if j != i]
    loss = torch.stack(terms).mean()
    return PredictionLoss(loss, -loss.detach())


class DINO(Objective):
    """DINO: a student matching a momentum teacher's centred, sharpened prototype distribution.

    out_dim: prototypes K (the paper: 65,536; small data: 1,024). Student temperature 0.1;
    teacher temperature warmed up linearly from ``warmup_teacher_temperature`` (0.04) to
    ``teacher_temperature`` over ``teacher_warmup_steps``; centre momentum 0.9; teacher momentum
    from ``momentum`` to 1 on a cosine schedule. ``global_views`` of the views are the global
    crops (the teacher's; with ``multi_crop`` its first ``global_crops``), ``local_views`` more
    go to the student only. centering / sharpening: the two switches whose removal collapses.
    similarity: how the head scores its bottleneck output against the prototypes (any critic;
    default cosine with T = 1, the paper's normalised head); the teacher's head is a momentum
    copy, so a learned similarity (bilinear, separable) is averaged into the teacher too.
    """

    def __init__(
        self,
        encoder: Encoder,
        out_dim: int = 1024,
        hidden_dim: int = 512,
        bottleneck_dim: int = 64,
        head_layers: int = 3,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.07,
        warmup_teacher_temperature: float = 0.04,
        teacher_warmup_steps: int = 0,
        center_momentum: float = 0.9,
        momentum: float = 0.996,
        global_views: int = 2,
        local_views: int = 0,
        centering: bool = True,
        sharpening: bool = True,
        similarity: Critic | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("student_temperature", student_temperature), ("teacher_temperature", teacher_temperature),
                            ("warmup_teacher_temperature", warmup_teacher_temperature)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for name, value in (("center_momentum", center_momentum), ("momentum", momentum)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if global_views < 1 or local_views < 0 or global_views + local_views < 2:
            raise ValueError(f"DINO needs global_views >= 1 and at least 2 views in all, got {global_views} global "
                             f"and {local_views} local")
        if teacher_warmup_steps < 0:
            raise ValueError(f"teacher_warmup_steps must be >= 0, got {teacher_warmup_steps}")
        self.encoder = encoder
        self.head = DINOHead(encoder.out_dim, out_dim, hidden_dim, bottleneck_dim, head_layers, similarity)
        self.teacher_encoder = frozen_copy(encoder)
        self.teacher_head = frozen_copy(self.head)
        self.num_views = global_views + local_views  # what the trainer asks the transform for
        self.global_views = global_views
        self.student_temperature = float(student_temperature)
        self.teacher_temperature = float(teacher_temperature)
        self.warmup_teacher_temperature = float(warmup_teacher_temperature)
        self.teacher_warmup_steps = int(teacher_warmup_steps)
        self.center_momentum = float(center_momentum)
        self.base_momentum = float(momentum)
        self.centering, self.sharpening = bool(centering), bool(sharpening)
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._teacher_logits: Tensor | None = None

    def current_teacher_temperature(self) -> float:
        """The warm-up value at this step; the student's temperature when sharpening is off."""
        if not self.sharpening:
            return self.student_temperature
        step = int(self.steps_done)
        if step >= self.teacher_warmup_steps:
            return self.teacher_temperature
        fraction = step / self.teacher_warmup_steps
        return self.warmup_teacher_temperature + fraction * (self.teacher_temperature - self.warmup_teacher_temperature)

    def forward(self, batch: Batch) -> StepOutput:
        if len(batch.views) != self.num_views:
            raise ValueError(f"DINO expects {self.num_views} views ({self.global_views} global first), got "
                             f"{len(batch.views)}; use data.augment: {{name: multi_crop}} for local views")
        student = [self.head(self.encoder(v).global_) for v in batch.views]  # V x [N, K]
        with torch.no_grad():
            teacher_logits = [self.teacher_head(self.teacher_encoder(v).global_) for v in batch.views[:self.global_views]]
            temperature = self.current_teacher_temperature()
            center = self.center if self.centering else None
            teacher = [teacher_probabilities(t, center, temperature) for t in teacher_logits]
        terms = dino_loss(student, teacher, self.student_temperature)
        self._teacher_logits = torch.cat(teacher_logits).detach()  # for the centre update after the step
        with torch.no_grad():
            q = torch.cat(teacher)
            entropy = -(q * q.clamp_min(1e-12).log()).sum(-1).mean()  # 0: one-hot collapse
            mean_q = q.mean(0)
            mean_entropy = -(mean_q * mean_q.clamp_min(1e-12).log()).sum()  # log K at most: uniform
        return StepOutput(loss=terms.loss, logs={"teacher_entropy": entropy, "teacher_mean_entropy": mean_entropy,
                                                 "teacher_temperature": temperature})

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Update the centre (EMA of the teacher's outputs over the global batch), move the teacher."""
        if self._teacher_logits is not None and self.centering:
            batch_center = distributed.gather(self._teacher_logits.mean(0, keepdim=True)).mean(0, keepdim=True)
            self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)
        self._teacher_logits = None
        self.steps_done += 1
        m = cosine_momentum(self.base_momentum, step, total_steps)
        momentum_update(self.teacher_encoder, self.encoder, m)
        momentum_update(self.teacher_head, self.head, m)

    def embed(self, x: Tensor) -> Tensor:
        return self.encoder(x).global_

    def project(self, x: Tensor) -> Tensor:
        """Images -> the student head's prototype logits ``[N, K]`` (what the collapse monitor can watch)."""
        return self.head(self.encoder(x).global_)

    def parameter_groups(self) -> list[dict]:
        trainable = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("teacher_")]
        return [{"params": trainable}]
