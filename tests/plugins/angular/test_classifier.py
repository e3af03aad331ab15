"""The spherical classifier and its margin estimators against hand computations and independent references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.config import OptimConfig, build
from selfsup.engine.optim import build_optimizer
from selfsup.errors import ConfigError
from selfsup.interfaces import Batch, Encoder, Features, Scores
from selfsup.plugins.angular.classifier import ArcFace, CosFace, SoftmaxCE, SphereFace, SphericalClassifier
from selfsup.plugins.angular.estimators import ArcFaceMargin, CosFaceMargin, NormalizedSoftmax, SphereFaceMargin
from selfsup.plugins.common.critics import CosineCritic
from selfsup.plugins.common.estimators import InfoNCE


class Identity(Encoder):
    """The input vectors are the embedding."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_dim = dim

    def forward(self, x: Tensor) -> Features:
        return Features(global_=x)


# --------------------------------------------------------------------------- independent references
class InsightfaceArcMargin(nn.Module):
    """ArcFace as written in insightface's / arcface-pytorch's ``ArcMarginProduct`` (reference)."""

    def __init__(self, weight: Tensor, s: float = 64.0, m: float = 0.5, easy_margin: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.s, self.m, self.easy_margin = s, m, easy_margin
        self.cos_m, self.sin_m = math.cos(m), math.sin(m)
        self.th = math.cos(math.pi - m)
        self.mm = math.sin(math.pi - m) * m

    def forward(self, x: Tensor, label: Tensor) -> Tensor:
        cosine = F.linear(F.normalize(x), F.normalize(self.weight))
        sine = torch.sqrt((1.0 - torch.pow(cosine, 2)).clamp(0, 1))
        phi = cosine * self.cos_m - sine * self.sin_m
        if self.easy_margin:
            phi = torch.where(cosine > 0, phi, cosine)
        else:
            phi = torch.where(cosine > self.th, phi, cosine - self.mm)
        one_hot = torch.zeros(cosine.size()).scatter_(1, label.view(-1, 1).long(), 1)
        output = (one_hot * phi) + ((1.0 - one_hot) * cosine)
        return output * self.s


def am_softmax_logits(x: Tensor, weight: Tensor, labels: Tensor, s: float, m: float) -> Tensor:
    """CosFace / AM-Softmax logits: s·(cos - m·onehot) (reference)."""
    cosine = F.normalize(x) @ F.normalize(weight).T
    return s * (cosine - m * F.one_hot(labels, weight.shape[0]))


def _classifier(objective_cls, dim=5, classes=4, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = objective_cls(Identity(dim), classes, **kwargs)
    x = torch.randn(12, dim)
    labels = torch.arange(12) % classes
    return model, x, labels


# --------------------------------------------------------------------------- agreement with references
@pytest.mark.parametrize(("s", "m", "easy"), [(64.0, 0.5, False), (30.0, 0.3, False), (16.0, 0.5, True)])
def test_arcface_loss_and_gradients_match_insightface_reference(s, m, easy) -> None:
    model, x, labels = _classifier(ArcFace, scale=s, margin=m, easy_margin=easy)
    reference = InsightfaceArcMargin(model.prototypes.detach(), s, m, easy)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = model(Batch(inputs=x_ours, labels=labels)).loss
    theirs = F.cross_entropy(reference(x_ref, labels), labels)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.prototypes.grad, reference.weight.grad, atol=1e-5, rtol=1e-4)


def test_cosface_loss_matches_am_softmax_reference() -> None:
    model, x, labels = _classifier(CosFace, scale=30.0, margin=0.35)
    expected = F.cross_entropy(am_softmax_logits(x, model.prototypes.detach(), labels, 30.0, 0.35), labels)
    torch.testing.assert_close(model(Batch(inputs=x, labels=labels)).loss, expected)


def test_softmax_baseline_is_infonce_on_a_scaled_cosine_critic() -> None:
    model, x, labels = _classifier(SoftmaxCE, scale=16.0)
    loss = model(Batch(inputs=x, labels=labels)).loss
    cos_over_t = CosineCritic(temperature=1 / 16)(x, model.prototypes.detach())  # [N, C] = 16 cos
    via_parts = InfoNCE()(Scores.from_matrix(cos_over_t, F.one_hot(labels, 4).bool())).loss
    torch.testing.assert_close(loss, via_parts, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, F.cross_entropy(cos_over_t, labels), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- hand computations
@pytest.mark.parametrize("theta", [0.0, math.pi / 4, math.pi - 0.5 - 1e-3, math.pi - 0.5 + 1e-3])
def test_logits_and_loss_at_chosen_angles(theta: float) -> None:
    """2-D embedding at angle θ to prototype e1 (class 0); prototype e2 (class 1) at 90 degrees."""
    s, m = 64.0, 0.5
    model = ArcFace(Identity(2), 2, scale=s, margin=m)
    with torch.no_grad():
        model.prototypes.copy_(torch.eye(2))
    x = torch.tensor([[math.cos(theta), math.sin(theta)]], dtype=torch.float32)
    target = math.cos(theta + m) if theta <= math.pi - m else math.cos(theta) - m * math.sin(m)
    other = math.sin(theta)  # cos(θ - π/2)
    logits = model.estimator.full_logits(model.cosines(x), torch.tensor([0]))
    torch.testing.assert_close(logits, torch.tensor([[s * target, s * other]]), atol=2e-4, rtol=1e-5)
    expected_loss = -(s * target) + math.log(math.exp(s * target) + math.exp(s * other))
    out = model(Batch(inputs=x, labels=torch.tensor([0])))
    assert out.loss.item() == pytest.approx(expected_loss, rel=1e-4, abs=1e-3)
    assert out.logs["mi"].item() == pytest.approx(math.log(2) - expected_loss, rel=1e-4, abs=1e-3)
    assert out.logs["target_angle_deg"].item() == pytest.approx(math.degrees(theta), abs=0.05)


def test_target_logit_decreases_as_the_margin_grows() -> None:
    cos = torch.tensor([[0.3, 0.1, -0.3]])
    labels = torch.tensor([0])
    for make in (lambda m: ArcFaceMargin(30.0, m), lambda m: CosFaceMargin(30.0, m)):
        targets = [make(m).full_logits(cos, labels)[0, 0].item() for m in (0.0, 0.1, 0.2, 0.3, 0.5)]
        assert all(a > b for a, b in zip(targets, targets[1:]))
        losses = [make(m)(Scores(cos[:, :1], cos[:, 1:])).loss.item() for m in (0.0, 0.1, 0.2, 0.3, 0.5)]
        assert all(a < b for a, b in zip(losses, losses[1:]))


# --------------------------------------------------------------------------- half precision
def test_no_nan_at_unit_cosine_under_bf16_autocast_and_float16_scores() -> None:
    for objective_cls in (ArcFace, CosFace, SphereFace, SoftmaxCE):
        model = objective_cls(Identity(3), 3)
        with torch.no_grad():
            model.prototypes.copy_(torch.eye(3))
        x = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], requires_grad=True)  # cos = 1, -1, 1
        labels = torch.tensor([0, 0, 1])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(Batch(inputs=x, labels=labels))
        out.loss.backward()
        assert torch.isfinite(out.loss), objective_cls.__name__
        assert bool(torch.isfinite(x.grad).all()) and bool(torch.isfinite(model.prototypes.grad).all())
    for estimator in (ArcFaceMargin(), CosFaceMargin(), SphereFaceMargin(), NormalizedSoftmax()):
        positive = torch.tensor([[1.0], [-1.0], [0.9995]], dtype=torch.float16, requires_grad=True)
        negative = torch.tensor([[-1.0, 1.0], [1.0, -1.0], [0.0, 1.0]], dtype=torch.float16, requires_grad=True)
        estimate = estimator(Scores(positive, negative))
        estimate.loss.backward()
        assert torch.isfinite(estimate.loss) and estimate.loss.dtype == torch.float32
        assert bool(torch.isfinite(positive.grad).all()) and bool(torch.isfinite(negative.grad).all())


# --------------------------------------------------------------------------- presets, parameters, groups
def test_presets_and_overrides() -> None:
    assert (ArcFaceMargin().scale, ArcFaceMargin().margin) == (64.0, 0.5)
    small = ArcFaceMargin(preset="small_data")
    assert (small.scale, small.margin) == (16.0, 0.3)
    assert (ArcFaceMargin(scale=20.0, preset="small_data").scale, ArcFaceMargin(margin=0.2).margin) == (20.0, 0.2)
    assert (CosFaceMargin().scale, CosFaceMargin().margin) == (64.0, 0.35)
    assert NormalizedSoftmax(preset="small_data").scale == 16.0
    for bad in (lambda: ArcFaceMargin(margin=2.0), lambda: ArcFaceMargin(scale=0.0), lambda: ArcFaceMargin(preset="x"),
                lambda: SphereFaceMargin(margin=6), lambda: SphereFaceMargin(margin=2.5),
                lambda: SphericalClassifier(Identity(2), 1), lambda: SphericalClassifier(Identity(2), 3, prototype_lr_scale=0)):
        with pytest.raises(ValueError):
            bad()


def test_sphereface_counts_iterations_in_training_only() -> None:
    estimator = SphereFaceMargin(lambda_base=100.0, gamma=1.0, lambda_min=2.0)
    scores = Scores(torch.tensor([[0.5]]), torch.tensor([[0.1, 0.2]]))
    assert estimator.current_lambda == 100.0
    for _ in range(3):
        estimator(scores)
    assert int(estimator.iteration) == 3 and estimator.current_lambda == pytest.approx(25.0)
    estimator.eval()
    estimator(scores)
    assert int(estimator.iteration) == 3
    assert "iteration" in estimator.state_dict()
    late = SphereFaceMargin(lambda_base=100.0, gamma=1.0, lambda_min=2.0)
    late.iteration.fill_(10**6)
    assert late.current_lambda == 2.0
    # θ = π/3, m = 4: ψ = -cos(4π/3) - 2 = -1.5; target = s (λ cos θ + ψ) / (1 + λ) = 64 (1 - 1.5) / 3
    logits = late.full_logits(torch.tensor([[0.5, 0.2]]), torch.tensor([0]))
    torch.testing.assert_close(logits, torch.tensor([[64.0 * (2.0 * 0.5 - 1.5) / 3.0, 64.0 * 0.2]]))


def test_prototypes_get_their_own_parameter_group() -> None:
    model = ArcFace(Identity(4), 3, embedding_dim=6, prototype_lr_scale=10.0, prototype_weight_decay=0.0)
    groups = model.parameter_groups()
    assert groups[1]["params"] == [model.prototypes] and groups[1]["lr_scale"] == 10.0
    assert all(p is not model.prototypes for p in groups[0]["params"]) and len(groups[0]["params"]) == 3  # neck
    optimizer = build_optimizer(groups, OptimConfig(name="sgd", lr=0.1, weight_decay=1e-4), 256)
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(0.1), pytest.approx(1.0)]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-4, 0.0]


def test_forward_needs_valid_labels_and_embed_is_unit_norm() -> None:
    model, x, labels = _classifier(ArcFace)
    with pytest.raises(ValueError, match="labels"):
        model(Batch(inputs=x))
    with pytest.raises(ValueError, match="0..3"):
        model(Batch(inputs=x, labels=torch.full((12,), -1)))
    z = model.embed(x)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(12))
    torch.testing.assert_close(model.predict(x), (z @ model.normalized_prototypes().T).argmax(1))


def test_objectives_build_from_config_with_key_paths(registry) -> None:
    context = {"num_classes": 10, "in_channels": 1, "image_size": 8}
    node = {"name": "arcface", "encoder": {"name": "small_conv", "width": 4}, "preset": "small_data"}
    model = build(registry, "objective", node, "objective", context)
    assert isinstance(model, ArcFace) and model.estimator.margin == 0.3 and model.prototypes.shape == (10, 32)
    node = {"name": "spherical_classifier", "encoder": {"name": "small_conv", "width": 4},
            "estimator": {"name": "cosface", "scale": 30, "margin": 0.2}}
    model = build(registry, "objective", node, "objective", context)
    assert isinstance(model.estimator, CosFaceMargin) and model.estimator.scale == 30.0
    with pytest.raises(ConfigError, match=r"objective: objective 'arcface' rejected its parameters: margin"):
        build(registry, "objective", {"name": "arcface", "encoder": {"name": "small_conv"}, "margin": 3.0},
              "objective", context)
    with pytest.raises(ConfigError, match=r"objective.estimator.margn: unknown parameter"):
        build(registry, "objective", {"name": "spherical_classifier", "encoder": {"name": "small_conv"},
                                      "estimator": {"name": "arcface", "margn": 0.1}}, "objective", context)


class LinearEncoder(Encoder):
    """Flatten + linear map: a cheap encoder for training tests."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.out_dim = dim
        self.linear = nn.Linear(in_dim, dim)

    def forward(self, x: Tensor) -> Features:
        return Features(global_=self.linear(x.flatten(1)))


@pytest.mark.parametrize("objective_cls", [ArcFace, CosFace, SphereFace, SoftmaxCE])
def test_training_steps_reduce_the_loss_on_digits(registry, objective_cls) -> None:
    torch.manual_seed(0)
    data = registry.create("dataset", "digits")
    model = objective_cls(LinearEncoder(64, 16), 10, preset="small_data")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = data.train.as_float()[:256], data.train.labels[:256]
    losses = []
    for _ in range(30):
        out = model(Batch(inputs=x, labels=y))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    test_acc = (model.predict(data.test.as_float()) == data.test.labels).float().mean()
    assert test_acc > 0.8
