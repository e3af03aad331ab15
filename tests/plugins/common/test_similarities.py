"""Similarity measures of aligned pairs: formulas by hand, collapse values, stability where a
naive form breaks, and every built-in similarity training BYOL and SimSiam from YAML."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from support import tiny_pipeline

from selfsup.engine import build_trainer
from selfsup.interfaces import Critic
from selfsup.plugins.common.critics import AngularCritic, CosineCritic, NegSquaredEuclideanCritic, RBFCritic
from selfsup.plugins.noncontrastive.byol import byol_loss
from selfsup.testing import check_critic


def test_formulas_by_hand_and_collapse_values():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    assert NegSquaredEuclideanCritic().pair(a, b).tolist() == [-2.0, 0.0]  # collapse value 0 on identical rows
    assert AngularCritic().pair(a, b).tolist() == pytest.approx([-math.pi / 2, 0.0], abs=2e-3)
    assert RBFCritic(bandwidth=1.0).pair(a, b).tolist() == pytest.approx([math.exp(-1.0), 1.0])
    assert CosineCritic(temperature=1.0).pair(a, b).tolist() == [0.0, 1.0]
    for critic in (NegSquaredEuclideanCritic(temperature=0.5), AngularCritic(), RBFCritic(bandwidth=0.7)):
        assert torch.allclose(critic(a, b).diagonal(), critic.pair(a, b), atol=1e-5)  # pair = diagonal


def test_angular_is_stable_where_a_naive_arccos_is_not():
    check_critic(AngularCritic())  # identical and antipodal inputs, fp32 / bf16 / fp16 autocast

    class NaiveAngular(Critic):
        def forward(self, query, keys):
            return -torch.arccos(F.normalize(query, dim=-1) @ F.normalize(keys, dim=-1).T)

    with pytest.raises(AssertionError, match="at identical inputs"):
        check_critic(NaiveAngular())


def test_cosine_temperature_is_exact_in_float64():
    critic = CosineCritic(temperature=0.3)
    a = torch.randn(3, 4, dtype=torch.float64)
    expected = F.cosine_similarity(a, a.flip(0), dim=-1) / 0.3
    assert torch.allclose(critic.pair(a, a.flip(0)), expected, rtol=1e-14, atol=0)
    assert critic.pair(a, a.flip(0)).dtype == torch.float64


def test_byol_default_loss_is_the_papers_2_minus_2_cos():
    p, t = torch.randn(6, 5), torch.randn(6, 5)
    by_hand = (2.0 - 2.0 * F.cosine_similarity(p, t, dim=-1)).mean()
    assert torch.allclose(byol_loss(p, t).loss, by_hand, atol=1e-6)


SIMILARITIES = {
    "cosine": {"name": "cosine", "temperature": 1.0},
    "dot": {"name": "dot"},
    "neg_sq_euclidean": {"name": "neg_sq_euclidean"},
    "angular": {"name": "angular"},
    "rbf": {"name": "rbf", "bandwidth": 2.0},
    "bilinear": {"name": "bilinear", "dim": 16},
    "separable": {"name": "separable", "query_dim": 16, "key_dim": 16, "hidden_dim": 16, "embedding_dim": 16},
}


@pytest.mark.parametrize("method", ["byol", "simsiam", "moco_v3"])
@pytest.mark.parametrize("similarity", list(SIMILARITIES))
def test_every_similarity_trains_byol_simsiam_and_moco_v3_from_yaml(tmp_path, registry, method, similarity):
    """BYOL and SimSiam take it as ``similarity`` (aligned pairs), MoCo v3 as its ``critic``
    (the prediction against every key of the batch)."""
    cfg = tiny_pipeline(tmp_path, trainer__max_steps=2, data__batch_size=32)
    key = "critic" if method == "moco_v3" else "similarity"
    cfg["objective"] = {"name": method, "encoder": {"name": "small_conv", "width": 4}, key: SIMILARITIES[similarity]}
    cfg["objective"]["embedding_dim"] = 16
    if method == "moco_v3":
        cfg["objective"]["hidden_dim"] = 32
    trainer = build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "run")
    before = [p.detach().clone() for p in trainer.objective.encoder.parameters()]
    result = trainer.fit()
    assert result.steps == 2
    part = getattr(trainer.objective, key)
    assert type(part).__name__.lower().startswith(similarity.split("_")[0][:3])
    after = list(trainer.objective.encoder.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after))  # the encoder learned from it


@pytest.mark.parametrize("method, width_key", [("byol", "embedding_dim"), ("simsiam", "embedding_dim"),
                                               ("dino", "bottleneck_dim")])
def test_a_learned_similarity_of_the_wrong_width_is_a_config_error(tmp_path, registry, method, width_key):
    from selfsup.errors import ConfigError

    cfg = tiny_pipeline(tmp_path, trainer__max_steps=1, data__batch_size=32)
    cfg["objective"] = {"name": method, "encoder": {"name": "small_conv", "width": 4}, width_key: 16,
                        "similarity": {"name": "bilinear", "dim": 8}}
    with pytest.raises(ConfigError, match=r"objective.*BilinearCritic cannot score .* of width 16"):
        build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
