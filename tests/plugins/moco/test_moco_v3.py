"""MoCo v3: the symmetric, 2T-scaled loss by hand, its heads, and the cosine momentum schedule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.config import build
from selfsup.interfaces import Batch
from selfsup.plugins.common.critics import CosineCritic
from selfsup.plugins.common.momentum import cosine_momentum
from selfsup.plugins.common.samplers import InBatchNegatives, MomentumQueue
from selfsup.plugins.common.split_batchnorm import SplitBatchNorm
from selfsup.plugins.encoders.conv import SmallConvNet
from selfsup.plugins.moco import MoCoV3


@pytest.fixture(autouse=True)
def _one_thread(_few_threads):
    """Tiny models: one torch thread is fastest, extra threads only contend on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_v3(**kwargs) -> MoCoV3:
    torch.manual_seed(0)
    return MoCoV3(SmallConvNet(in_channels=1, image_size=8, width=4), embedding_dim=8, hidden_dim=16, **kwargs)


def views(n: int = 6) -> Batch:
    x1, x2 = torch.rand(n, 1, 8, 8), torch.rand(n, 1, 8, 8)
    return Batch(inputs=x1, views=[x1, x2], index=torch.arange(n))


def test_loss_is_2t_times_the_symmetric_cross_entropy():
    model = tiny_v3(temperature=0.3)
    batch = views()
    out = model(batch)
    x1, x2 = batch.views

    def query(x):
        return F.normalize(model.predictor(model.projector(model.encoder(x).global_)), dim=1)

    def key(x):
        return F.normalize(model.key_projector(model.key_encoder(x).global_), dim=1)

    labels = torch.arange(6)  # the positive of query i is key i of the other view
    expected = (F.cross_entropy(query(x1) @ key(x2).T / 0.3, labels)
                + F.cross_entropy(query(x2) @ key(x1).T / 0.3, labels))
    torch.testing.assert_close(out.loss, 2 * 0.3 * expected)
    assert 0.0 <= float(out.logs["instance_acc"]) <= 1.0


def test_heads_follow_the_paper():
    model = tiny_v3()
    projector, predictor = list(model.projector), list(model.predictor)
    assert isinstance(projector[1], nn.BatchNorm1d) and projector[1].affine
    assert isinstance(projector[-1], nn.BatchNorm1d) and not projector[-1].affine  # output BN, no affine
    assert isinstance(predictor[1], nn.BatchNorm1d) and isinstance(predictor[-1], nn.Linear)  # no output BN
    assert predictor[0].in_features == predictor[-1].out_features == 8 and predictor[0].out_features == 16
    assert isinstance(model.sampler, InBatchNegatives)
    assert not any(p.requires_grad for p in model.key_encoder.parameters())
    assert not any(p.requires_grad for p in model.key_projector.parameters())
    grouped = {id(p) for g in model.parameter_groups() for p in g["params"]}
    assert grouped == {id(p) for n, p in model.named_parameters() if not n.startswith("key_")}
    assert not hasattr(model, "key_predictor")  # the predictor has no momentum copy


def test_momentum_follows_the_cosine_schedule_to_one():
    model = tiny_v3(momentum=0.9)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.key_encoder.parameters()]
    model.after_step(step=4, total_steps=10)
    m = cosine_momentum(0.9, 5, 10)  # after step 4 comes step 5's key encoder
    assert m == pytest.approx(0.95)
    for target, old, online in zip(model.key_encoder.parameters(), before, model.encoder.parameters()):
        torch.testing.assert_close(target, m * old + (1 - m) * online)
    assert model.current_momentum(9, 10) == pytest.approx(1.0)  # after the last of 10 steps


def test_loss_scale_defaults_to_twice_the_critic_temperature():
    assert tiny_v3(temperature=0.5).loss_scale == pytest.approx(1.0)
    assert tiny_v3(critic=CosineCritic(temperature=0.25)).loss_scale == pytest.approx(0.5)
    assert tiny_v3(loss_scale=3.0).loss_scale == 3.0
    with pytest.raises(ValueError, match="loss_scale"):
        tiny_v3(loss_scale=0.0)


def test_a_queue_from_config_gets_both_views_keys(registry):
    node = {"name": "moco_v3", "encoder": {"name": "small_conv", "width": 4}, "embedding_dim": 8, "hidden_dim": 16,
            "sampler": {"name": "momentum_queue", "size": 20}, "split_bn": 2}
    context = {"in_channels": 1, "image_size": 8, "num_train": 50}
    model = build(registry, "objective", node, "objective", context=context)
    assert isinstance(model.sampler, MomentumQueue)
    assert sum(isinstance(m, SplitBatchNorm) for m in model.modules()) > 0
    out = model(views())
    out.loss.backward()
    model.after_step(0, 10)
    assert int(model.sampler.pointer) == 12  # 2 views x 6 keys
