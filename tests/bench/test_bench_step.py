"""`selfsup bench step` on a tiny digits pipeline: the per-phase breakdown, the floor and the
hand-written MoCo reference."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from support import tiny_pipeline

from selfsup.config import load_pipeline
from selfsup.engine import build_trainer
from selfsup.plugins.bench import step


@pytest.fixture
def pipeline_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    OmegaConf.save(OmegaConf.create(tiny_pipeline(tmp_path / "runs")), path)
    return str(path)


def test_bench_step_reports_every_phase_of_a_moco_step(pipeline_file, capsys):
    result = step.run(pipeline_file, ["data.batch_size=32"], steps=3, warmup=1)
    phases = set(result["breakdown"])
    assert {"data", "augment", "forward", "backward", "optimizer", "after_step"} <= phases
    assert {"forward/query_encoder", "forward/key_encoder", "forward/critic_estimator",
            "after_step/sampler_update", "after_step/momentum_update"} <= phases
    # nested phases are part of their parent's time
    assert result["breakdown"]["forward/query_encoder"] <= result["breakdown"]["forward"]
    assert 0 < result["augment_share"] < 1
    low, high = result["ratio_quartiles"]
    assert 0 < low <= result["ratio"] <= high  # the median of the step/floor rounds, between its quartiles
    assert result["reference_ratio"] > 0  # MoCo with a queue: the hand-written reference is timed too
    assert set(result["round_s"]) == {"step", "floor", "reference"}
    assert result["images_per_s"] == pytest.approx(32 / result["step_s"])
    out = capsys.readouterr().out
    assert "step/floor" in out and "step/reference" in out and "peak memory" in out and "query_encoder" in out


def test_reference_loss_is_the_objectives_infonce(registry):
    """The textbook logits + cross-entropy equal the framework's scores + InfoNCE on the same keys."""
    from selfsup.plugins.common.critics import DotCritic
    from selfsup.plugins.common.estimators import InfoNCE
    from selfsup.plugins.common.samplers import MomentumQueue

    gen = torch.Generator().manual_seed(0)
    query, key = (torch.nn.functional.normalize(torch.randn(6, 4, generator=gen), dim=1) for _ in range(2))
    queue = MomentumQueue(size=9)
    queue.setup(4)
    framework = InfoNCE()(queue.score(DotCritic(temperature=0.2), query, key)).loss
    torch.testing.assert_close(step.moco_reference_loss(query, key, queue.keys, 0.2), framework)
    # and by hand, row by row in float64: -log(e^{q.k/T} / (e^{q.k/T} + sum_j e^{q.queue_j/T}))
    q, k, keys = query.double(), key.double(), queue.keys.double()
    positives = [math.exp(q[i] @ k[i] / 0.2) for i in range(6)]
    negatives = [torch.exp(keys @ q[i] / 0.2).sum().item() for i in range(6)]
    by_hand = sum(-math.log(p / (p + n)) for p, n in zip(positives, negatives)) / 6
    assert framework.item() == pytest.approx(float(by_hand), rel=1e-5)


def _run_one_baseline_step(pipeline_file, run_dir, make_step) -> tuple[object, bool, bool]:
    """One call of ``make_step(trainer, images)``'s step -> (trainer, query encoder moved, key encoder moved)."""
    trainer = build_trainer(load_pipeline(pipeline_file, ["trainer.progress=false"]), run_dir=run_dir)
    objective = trainer.objective
    query_before = [p.detach().clone() for p in objective.encoder.parameters()]
    key_before = [p.detach().clone() for p in objective.key_encoder.parameters()]
    make_step(trainer, next(trainer.loader.epoch(0))[0])()
    query_moved = any(not torch.equal(a, p) for a, p in zip(query_before, objective.encoder.parameters()))
    key_moved = any(not torch.equal(a, p) for a, p in zip(key_before, objective.key_encoder.parameters()))
    return trainer, query_moved, key_moved


def test_reference_step_trains_moves_keys_and_leaves_the_queue(pipeline_file, tmp_path):
    queue_before = build_trainer(load_pipeline(pipeline_file, ["trainer.progress=false"]),
                                 run_dir=tmp_path / "fresh").objective.sampler.keys.clone()  # same seed
    trainer, query_moved, key_moved = _run_one_baseline_step(pipeline_file, tmp_path / "ref",
                                                              step.moco_reference_step_fn)
    assert query_moved and key_moved  # optimiser step, then the momentum update
    assert torch.equal(trainer.objective.sampler.keys, queue_before)  # the reference writes its own copy


def test_reference_step_is_only_built_for_moco_with_a_queue(tmp_path):
    cfg = tiny_pipeline(tmp_path, objective={"name": "simsiam", "encoder": {"name": "small_conv", "width": 8}})
    trainer = build_trainer(OmegaConf.create(cfg), run_dir=tmp_path / "simsiam")
    assert step.moco_reference_step_fn(trainer, next(trainer.loader.epoch(0))[0]) is None


def test_floor_step_trains_the_query_side_only(pipeline_file, tmp_path):
    _, query_moved, key_moved = _run_one_baseline_step(pipeline_file, tmp_path / "floor", step.floor_step_fn)
    assert query_moved and not key_moved


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be at least 1"),
    (["--warmup", "-1"], "--warmup at least 0"),
])
def test_bench_step_arguments_out_of_range_are_refused_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        step.main(["no-such-pipeline.yaml", *argv])  # refused before the pipeline is even read
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
