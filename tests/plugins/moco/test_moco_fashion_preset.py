"""The MoCo Fashion-MNIST preset behind the README's quality-per-minute figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from selfsup.config import load_pipeline
from selfsup.engine import build_trainer


def test_moco_fashion_preset_trains_on_28px_grey_arrays(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "fashion_like.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (300, 28, 28), dtype=np.uint8), y_train=rng.integers(0, 10, 300),
             x_test=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), y_test=rng.integers(0, 10, 50))
    preset = Path(__file__).resolve().parents[3] / "examples" / "moco_fashion.yaml"
    cfg = load_pipeline(preset, [f"data.dataset.path={npz}", "data.batch_size=64", "trainer.max_steps=2",
                                 "trainer.progress=false", "trainer.eval_before=false", "trainer.eval_after=false"])
    assert cfg.objective.name == "moco_v2" and cfg.trainer.channels_last
    assert cfg.trainer.max_minutes == 15 and cfg.trainer.epochs is None  # a 15-minute run, sized by its pace
    trainer = build_trainer(cfg, run_dir=tmp_path / "run")
    result = trainer.fit()
    assert result.steps == 2
    assert int(trainer.objective.sampler.pointer) == 2 * 64  # two batches of keys enqueued
