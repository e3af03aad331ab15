"""DIM through the engine: the example pipelines validate, train a few steps and checkpoint."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from selfsup.config import load_pipeline
from selfsup.engine import build_trainer
from selfsup.engine.checkpoint import load as load_checkpoint

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
TINY = [
    "trainer.max_steps=3", "trainer.progress=false", "trainer.eval_before=false", "trainer.eval_after=false",
    "data.batch_size=16", "objective.local_critic.hidden_dim=16", "objective.local_critic.embedding_dim=16",
    "objective.global_critic.hidden_dim=16", "objective.prior.hidden_dims=[32,16]", "trainer.log_every=1",
]


def tiny_run(tmp_path, *overrides: str):
    cfg = load_pipeline(EXAMPLES / "dim_digits.yaml", [*TINY, f"trainer.out_dir={tmp_path}", *overrides])
    return build_trainer(cfg, run_dir=tmp_path / "run")


@pytest.mark.parametrize("preset", ["G", "L", "L+G"])
def test_dim_digits_trains_from_yaml(tmp_path, preset):
    trainer = tiny_run(tmp_path, f"objective.preset={preset}")
    disc_before = [p.detach().clone() for p in trainer.objective.prior.discriminator.parameters()]
    result = trainer.fit()
    assert result.steps == 3 and not result.interrupted
    disc_after = list(trainer.objective.prior.discriminator.parameters())
    assert all(not torch.equal(b, a) for b, a in zip(disc_before, disc_after))  # D took its own steps
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["extra_optimizers"]["prior_discriminator"]["state"]  # Adam moments were saved
    rows = (tmp_path / "run" / "metrics.csv").read_text()
    assert "prior_d_loss" in rows and "mi" in rows


def test_dim_trains_when_a_transform_is_configured(tmp_path):
    # num_views = 0: the engine makes no views even though two_view is configured
    trainer = tiny_run(tmp_path, "data.augment={name: two_view}", "objective.estimator.name=jsd")
    assert trainer.transform is not None
    assert trainer.fit().steps == 3


def test_dim_resume_restores_the_discriminator_optimizer(tmp_path):
    trainer = tiny_run(tmp_path)
    trainer.fit()
    resumed = build_trainer(OmegaConf.load(tmp_path / "run" / "config.yaml"), run_dir=tmp_path / "run")
    resumed.load_checkpoint()
    saved = trainer.objective.prior.optimizer.state_dict()["state"]
    loaded = resumed.objective.prior.optimizer.state_dict()["state"]
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k]["exp_avg"], loaded[k]["exp_avg"]) for k in saved)


def test_fashion_example_validates():
    cfg = load_pipeline(EXAMPLES / "dim_fashion.yaml")
    assert cfg.data.dataset == {"name": "arrays", "path": "../shared/data/fashion_mnist.npz"}
    assert cfg.objective.name == "dim" and cfg.objective.encoder.name == "dim_conv"


def test_bad_dim_parameter_names_its_key_path(tmp_path):
    from selfsup.errors import ConfigError

    with pytest.raises(ConfigError, match="objective.same_image"):
        tiny_run(tmp_path, "objective.same_image=drop")


def test_dim_bundle_is_registered(registry):
    assert ("objective", "dim") in registry and ("encoder", "dim_conv") in registry
    assert ("critic", "separable") in registry and ("critic", "concat") in registry and ("prior", "adversarial") in registry
