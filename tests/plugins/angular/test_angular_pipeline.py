"""The example pipeline trains from YAML through the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from selfsup.engine import build_trainer
from selfsup.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "angular_multimodal.yaml"


def _tiny(tmp_path, **objective) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(EXAMPLE))
    cfg["objective"]["encoder"].update(dim=16, heads=2)
    cfg["objective"].update(objective)
    cfg["trainer"].update(epochs=1, max_steps=3, progress=False, eval_before=False, out_dir=str(tmp_path))
    cfg["eval"].update(plots=False)
    return cfg


@pytest.mark.parametrize("name", ["arcface", "pairwise_contrastive"])
def test_example_pipeline_trains_and_evaluates_multimodal_data(registry, tmp_path, name) -> None:
    cfg = _tiny(tmp_path)
    if name == "pairwise_contrastive":
        cfg["objective"] = {"name": name, "encoder": cfg["objective"]["encoder"]}
    trainer = build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / name)
    result = trainer.fit()
    assert result.steps == 3 and 0.0 <= result.after["knn_acc"] <= 1.0
    assert result.after["feature_dim"] == 16
    assert json.loads((tmp_path / name / "metrics.json").read_text())["steps"] == 3


def test_multimodal_data_rejects_image_augmentation(registry, tmp_path) -> None:
    cfg = _tiny(tmp_path)
    cfg["data"]["augment"] = {"name": "two_view"}
    with pytest.raises(ConfigError, match="data.augment: .*multimodal.*set data.augment: null"):
        build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "x")


def test_supervised_objective_rejects_unlabelled_data(registry, tmp_path) -> None:
    import numpy as np

    path = tmp_path / "unlabelled.npz"
    labels = np.where(np.arange(20) % 2 == 0, np.arange(20) % 3, -1)  # every other sample unlabelled
    np.savez(path, a=np.random.default_rng(0).normal(size=(20, 3, 2)), y=labels)
    cfg = _tiny(tmp_path)
    cfg["data"]["dataset"] = {"name": "multimodal_arrays", "path": str(path), "modalities": ["a"], "labels_key": "y"}
    with pytest.raises(ConfigError, match="supervised and needs a label for every training sample"):
        build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "x")


def test_channels_last_leaves_multimodal_batches_alone(registry, tmp_path) -> None:
    cfg = _tiny(tmp_path)
    cfg["trainer"].update(channels_last=True, eval_after=False)
    result = build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "cl").fit()
    assert result.steps == 3  # mappings of [B, T, F] tokens pass through untouched
