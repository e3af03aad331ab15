"""`selfsup bench quality` on a tiny digits pipeline, and the MoCo Fashion-MNIST preset it is run on."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from support import tiny_pipeline

from selfsup.config import load_pipeline
from selfsup.engine import build_trainer
from selfsup.plugins.perf import quality


@pytest.fixture
def pipeline_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    OmegaConf.save(OmegaConf.create(tiny_pipeline(tmp_path / "runs")), path)
    return str(path)


def test_bench_quality_writes_a_curve_within_the_budget(pipeline_file, tmp_path):
    out = tmp_path / "quality"
    rows = quality.run(pipeline_file, [], minutes=0.02, evals=2, out=out)
    assert rows[0]["minutes"] == 0.0 and rows[0]["step"] == 0
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})  # strictly increasing
    assert rows[-1]["minutes"] < 0.02 + 0.05  # stops within one step of the budget
    assert all(0.0 <= r["knn_acc"] <= 1.0 for r in rows)
    with open(out / "quality.csv") as f:
        written = list(csv.DictReader(f))
    assert [int(r["step"]) for r in written] == [r["step"] for r in rows]
    assert (out / "quality.png").stat().st_size > 0


def test_moco_fashion_preset_trains_on_28px_grey_arrays(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "fashion_like.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (300, 28, 28), dtype=np.uint8), y_train=rng.integers(0, 10, 300),
             x_test=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), y_test=rng.integers(0, 10, 50))
    preset = Path(__file__).resolve().parents[3] / "examples" / "moco_fashion.yaml"
    cfg = load_pipeline(preset, [f"data.dataset.path={npz}", "data.batch_size=64", "trainer.max_steps=2",
                                 "trainer.progress=false", "trainer.eval_before=false", "trainer.eval_after=false"])
    assert cfg.objective.name == "moco_v2" and cfg.trainer.channels_last
    trainer = build_trainer(cfg, run_dir=tmp_path / "run")
    result = trainer.fit()
    assert result.steps == 2
    assert int(trainer.objective.sampler.pointer) == 2 * 64  # two batches of keys enqueued


def test_quality_bench_resizes_the_run_to_the_measured_pace(tmp_path, registry):
    trainer = build_trainer(OmegaConf.create(tiny_pipeline(tmp_path, trainer__max_steps=None)), registry,
                            run_dir=tmp_path / "run")
    trainer.global_step = 10
    # 10 steps in 4 s of a 20 s budget: 2.5 steps/s, so 16 s more hold 40 more steps
    assert quality.retarget(trainer, elapsed_s=4.0, budget_s=20.0) == 50
    assert trainer.total_steps == 50 and trainer.scheduler.last_epoch == 10
    # the budget already spent: the run ends at the current step
    assert quality.retarget(trainer, elapsed_s=25.0, budget_s=20.0) == 10 and trainer.total_steps == 10


@pytest.mark.parametrize("main, argv, message", [
    (quality.main, ["--minutes", "0"], "--minutes must be positive"),
    (quality.main, ["--evals", "0"], "--evals at least 1"),
])
def test_bench_arguments_out_of_range_are_refused_before_any_work(main, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-pipeline.yaml", *argv])  # refused before the pipeline is even read
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
