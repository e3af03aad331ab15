"""Heads as parts: the `mlp` head, heads given to bundles from YAML or as modules in Python."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from selfsup.config import build
from selfsup.errors import ConfigError
from selfsup.plugins.common.heads import MLPHead, build_head
from selfsup.plugins.encoders.conv import SmallConvNet
from selfsup.plugins.noncontrastive.byol import BYOL
from selfsup.testing import check_head

CONTEXT = {"in_channels": 1, "image_size": 8, "num_classes": 10, "num_train": 64}


def test_mlp_head_builds_for_any_input_width_and_passes_the_kit():
    check_head(MLPHead(out_dim=6, hidden_dim=10, layers=3, last_batch_norm=True))
    module = MLPHead(out_dim=6, hidden_dim=10, layers=3).build(5)
    assert [m.in_features for m in module if isinstance(m, nn.Linear)] == [5, 10, 10]
    assert [m.out_features for m in module if isinstance(m, nn.Linear)] == [10, 10, 6]
    with pytest.raises(ValueError, match="layers must be >= 1"):
        MLPHead(out_dim=4, layers=0)


def test_build_head_takes_a_head_a_module_or_the_default():
    assert build_head(None, 7, MLPHead(3))[1] == 3
    assert build_head(MLPHead(5), 7, MLPHead(3))[1] == 5
    ready = nn.Sequential(nn.Linear(7, 9), nn.ReLU())
    module, width = build_head(ready, 7, MLPHead(3))
    assert module is ready and width == 9 and ready.training  # width read from a dry forward, mode kept


@pytest.mark.parametrize("node, width", [
    ({"name": "simclr", "projector": {"name": "mlp", "out_dim": 32, "layers": 1}}, 32),
    ({"name": "moco_v3", "hidden_dim": 16, "projector": {"name": "mlp", "out_dim": 24, "hidden_dim": 16},
      "predictor": {"name": "mlp", "out_dim": 24, "hidden_dim": 8}}, 24),
    ({"name": "moco", "projector": {"name": "mlp", "out_dim": 20, "batch_norm": False}}, 20),
    ({"name": "moco", "projector": "linear", "embedding_dim": 12}, 12),  # a named option, not a registry head
    ({"name": "simsiam", "predictor": False, "embedding_dim": 16}, 16),  # the collapse study's switch
])
def test_bundles_take_heads_from_the_pipeline(registry, node, width):
    node = {**node, "encoder": {"name": "small_conv", "width": 4}}
    objective = build(registry, "objective", node, "objective", CONTEXT)
    out = objective.projector(torch.randn(4, objective.encoder.out_dim))
    assert out.shape == (4, width)
    if hasattr(objective, "sampler"):
        objective.sampler.setup(width, 0)  # the width the bundle set it up with: no error


def test_a_predictor_must_return_the_projection_width(registry):
    encoder = SmallConvNet(in_channels=1, image_size=8, width=4)
    byol = BYOL(encoder, embedding_dim=16, predictor=nn.Linear(16, 16))
    assert isinstance(byol.predictor, nn.Linear)
    with pytest.raises(ValueError, match="the predictor returns 8-d vectors but the projections it predicts are 16-d"):
        BYOL(encoder, embedding_dim=16, predictor=nn.Linear(16, 8))
    with pytest.raises(ConfigError, match=r"objective.predictor: expected a head as \{name: ..., parameters...\}"):
        build(registry, "objective", {"name": "byol", "encoder": {"name": "small_conv", "width": 4}, "predictor": 5},
              "objective", CONTEXT)
