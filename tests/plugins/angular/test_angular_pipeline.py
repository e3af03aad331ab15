"""The example pipeline trains from YAML through the engine; the benchmark's defaults match it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from selfsup.engine import build_trainer
from selfsup.errors import ConfigError
from selfsup.plugins.angular.bench import DEFAULT_PIPELINE, main

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "angular_multimodal.yaml"


def _tiny(tmp_path, **objective) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(EXAMPLE))
    cfg["objective"]["encoder"].update(dim=16, heads=2)
    cfg["objective"].update(objective)
    cfg["trainer"].update(epochs=1, max_steps=3, progress=False, eval_before=False, out_dir=str(tmp_path))
    cfg["eval"].update(plots=False)
    return cfg


def test_benchmark_defaults_are_the_example_pipeline() -> None:
    assert OmegaConf.to_container(OmegaConf.load(EXAMPLE)) == DEFAULT_PIPELINE


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


@pytest.mark.slow
def test_benchmark_command_runs_and_writes_its_files(tmp_path, capsys) -> None:
    cfg = copy.deepcopy(DEFAULT_PIPELINE)
    cfg["data"]["dataset"] = {"name": "multiview_digits", "modalities": ["rows", "columns", "spectrum"]}
    cfg["objective"]["encoder"].update(dim=16, heads=2)
    path = tmp_path / "bench.yaml"
    OmegaConf.save(OmegaConf.create(cfg), path)
    code = main(["--config", str(path), "--epochs", "1", "--methods", "arcface,softmax_ce",
                 "--timing-epochs", "1", "--out-dir", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 0
    assert "| arcface |" in printed and "| softmax_ce |" in printed and "s/epoch M=3" in printed
    assert "inter/intra angle ratio" in printed
    assert (tmp_path / "out" / "accuracy_vs_time.png").stat().st_size > 1000
    rows = (tmp_path / "out" / "angular_bench.csv").read_text().splitlines()
    assert rows[0] == "method,epoch,train_seconds,proto_acc,knn_acc" and len(rows) == 3


def test_channels_last_leaves_multimodal_batches_alone(registry, tmp_path) -> None:
    cfg = _tiny(tmp_path)
    cfg["trainer"].update(channels_last=True, eval_after=False)
    result = build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "cl").fit()
    assert result.steps == 3  # mappings of [B, T, F] tokens pass through untouched
