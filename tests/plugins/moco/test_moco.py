"""MoCo v1/v2: the moco_v2 preset, shuffle-BN with SplitBatchNorm, exact resume with a memory bank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from support import tiny_pipeline
from selfsup.config import build
from selfsup.engine import build_trainer
from selfsup.plugins.common.samplers import MemoryBank, MomentumQueue
from selfsup.plugins.common.split_batchnorm import SplitBatchNorm
from selfsup.plugins.encoders.conv import SmallConvNet
from selfsup.plugins.moco import MoCo

ROOT = Path(__file__).resolve().parents[3]
CONTEXT = {"in_channels": 1, "image_size": 8, "num_classes": 10, "num_train": 40}


@pytest.fixture(autouse=True)
def _one_thread(_few_threads):
    """Tiny models: one torch thread is fastest, extra threads only contend on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_presets_are_registered(registry):
    assert {"moco", "moco_v2", "moco_v3"} <= set(registry.names("objective"))


def test_moco_v2_preset_sets_the_paper_defaults(registry):
    model = build(registry, "objective", {"name": "moco_v2", "encoder": {"name": "small_conv", "width": 4}},
                  "objective", context=CONTEXT)
    assert isinstance(model, MoCo) and isinstance(model.sampler, MomentumQueue)
    assert model.sampler.size == 65536 and model.critic.temperature == 0.2 and model.base_momentum == 0.999
    assert len(model.projector) == 3 and model.sampler.keys.shape == (65536, 128)  # Linear-ReLU-Linear to 128-d
    small = build(registry, "objective", {"name": "moco_v2", "encoder": {"name": "small_conv", "width": 4},
                                          "queue_size": 100, "temperature": 0.1, "embedding_dim": 16},
                  "objective", context=CONTEXT)
    assert small.sampler.keys.shape == (100, 16) and small.critic.temperature == 0.1
    bank = build(registry, "objective", {"name": "moco_v2", "encoder": {"name": "small_conv", "width": 4},
                                         "sampler": {"name": "memory_bank", "num_negatives": 8}},
                 "objective", context=CONTEXT)
    assert isinstance(bank.sampler, MemoryBank) and bank.sampler.bank.shape == (40, 128)  # num_train slots


def test_shuffle_bn_with_split_bn_encodes_a_permuted_batch_and_restores_its_order():
    torch.manual_seed(0)
    model = MoCo(SmallConvNet(1, 8, 4), embedding_dim=8, split_bn=2)
    assert sum(isinstance(m, SplitBatchNorm) for m in model.key_encoder.modules()) == 4
    x = torch.rand(8, 1, 8, 8)
    torch.manual_seed(5)
    permutation = torch.randperm(8)
    expected = F.normalize(model._key_net(x[permutation]), dim=1)[torch.argsort(permutation)]
    unshuffled = F.normalize(model._key_net(x), dim=1)
    torch.manual_seed(5)  # the same draw inside _key
    keys = model._key(x)
    torch.testing.assert_close(keys, expected)
    assert not torch.allclose(keys, unshuffled, atol=1e-4)  # chunk statistics changed with the shuffle
    model.shuffle_bn = False
    torch.testing.assert_close(model._key(x), unshuffled)


def test_split_bn_must_be_positive():
    with pytest.raises(ValueError, match="split_bn"):
        MoCo(SmallConvNet(1, 8, 4), split_bn=0)


def test_memory_bank_run_resumes_exactly(tmp_path, registry):
    cfg = tiny_pipeline(tmp_path, objective__sampler={"name": "memory_bank", "num_negatives": 50},
                        objective__symmetric=True, trainer__max_steps=5)
    full = build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "full")
    full.fit()
    split = build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "split")
    original = split.objective.after_step

    def after_step(step, total):
        original(step, total)
        if step + 1 == 2:
            split.request_stop()

    split.objective.after_step = after_step
    assert split.fit().interrupted
    resumed = build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "split")
    resumed.fit(resume=True)
    expected, got = full.objective.state_dict(), resumed.objective.state_dict()
    assert int(got["sampler.draws"]) == 10  # 5 steps x 2 views
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


@pytest.mark.parametrize("example", ["moco_v2.yaml", "moco_v3.yaml"])
def test_examples_build_and_train_a_few_steps(tmp_path, registry, example):
    cfg = OmegaConf.load(ROOT / "examples" / example)
    cfg.trainer.update(max_steps=2, progress=False, eval_before=False, eval_after=False, out_dir=str(tmp_path))
    cfg.objective.encoder.width = 4
    trainer = build_trainer(cfg, registry, run_dir=tmp_path / "run")
    result = trainer.fit()
    assert result.steps == 2 and (tmp_path / "run" / "checkpoint.pt").exists()
