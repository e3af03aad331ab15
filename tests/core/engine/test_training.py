"""The engine end to end on tiny pipelines: resume equivalence, divergence, run folder."""

import json
import math
import runpy
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from support import fit_until, tiny_pipeline
from selfsup.engine import build_trainer
from selfsup.engine.checkpoint import load
from selfsup.errors import TrainingDiverged

ROOT = Path(__file__).resolve().parents[3]


train = fit_until


def test_resumed_run_ends_with_the_same_weights(tmp_path, registry):
    # 2 epochs of 22 steps (digits, batch 64); interrupt mid-epoch 1 at step 9
    cfg = tiny_pipeline(tmp_path, trainer__epochs=2, trainer__max_steps=None)
    full, full_result = train(cfg, tmp_path / "full", registry)
    _, stopped = train(cfg, tmp_path / "split", registry, stop_at=9)
    assert stopped.interrupted and stopped.steps == 9
    resumed, resumed_result = train(cfg, tmp_path / "split", registry, resume=True)
    assert resumed_result.steps == full_result.steps == 44
    full_state, resumed_state = full.objective.state_dict(), resumed.objective.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for key in full_state:
        torch.testing.assert_close(resumed_state[key], full_state[key], rtol=0, atol=0, msg=key)


def test_checkpoint_holds_everything_and_loads_as_data(tmp_path, registry):
    trainer, _ = train(tiny_pipeline(tmp_path), tmp_path / "run", registry)
    state = load(tmp_path / "run" / "checkpoint.pt")  # weights_only=True inside
    assert {"model", "optimizer", "scheduler", "rng", "progress", "config"} <= set(state)
    assert state["progress"]["global_step"] == 6
    assert torch.equal(state["model"]["sampler.keys"], trainer.objective.sampler.keys.cpu())
    assert int(state["model"]["sampler.pointer"]) == (6 * 64) % 100
    from safetensors.torch import load_file

    exported = load_file(str(tmp_path / "run" / "encoder.safetensors"))
    torch.testing.assert_close(exported["blocks.0.0.weight"], trainer.objective.encoder.blocks[0][0].weight)
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert saved.objective.name == "moco" and saved.optim.lr == 0.05 and saved.schedule.name == "cosine"


def test_metrics_files_are_written(tmp_path, registry):
    train(tiny_pipeline(tmp_path), tmp_path / "run", registry)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert all(r["loss"] > 0 and r["images_per_s"] > 0 for r in rows)
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"step", "loss", "lr", "images_per_s"} <= set(header)


def _poison(trainer):
    """Make every loss of ``trainer``'s objective NaN."""
    original_forward = trainer.objective.forward

    def poisoned(batch):
        out = original_forward(batch)
        out.loss = out.loss * float("nan")
        return out

    trainer.objective.forward = poisoned


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, registry):
    build_trainer(OmegaConf.create(tiny_pipeline(tmp_path, trainer__max_steps=2)), registry,
                  run_dir=tmp_path / "run").fit()
    good = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    trainer = build_trainer(OmegaConf.create(tiny_pipeline(tmp_path, trainer__max_steps=4)), registry,
                            run_dir=tmp_path / "run")
    _poison(trainer)
    with pytest.raises(TrainingDiverged, match="loss became nan.*step 2.*the last good checkpoint in .* is kept"):
        trainer.fit(resume=True)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == good


def test_nan_loss_before_any_checkpoint_says_so(tmp_path, registry):
    trainer = build_trainer(OmegaConf.create(tiny_pipeline(tmp_path)), registry, run_dir=tmp_path / "run")
    _poison(trainer)
    with pytest.raises(TrainingDiverged, match="step 0; training stopped and no checkpoint had been written yet"):
        trainer.fit()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_main_job_beats_random_init(tmp_path, registry):
    """The Quick start pipeline, shortened: the trained encoder beats its random init on kNN."""
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "examples" / "moco_digits.yaml"))
    cfg["trainer"].update(epochs=20, progress=False, out_dir=str(tmp_path))
    cfg["eval"].update(linear_probe=False, plots=False)
    _, result = train(cfg, tmp_path / "run", registry)
    assert result.after["knn_acc"] > result.before["knn_acc"] + 0.05


def test_python_composition_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["compose.py", "--epochs", "1", "--run-dir", str(tmp_path / "compose")])
    namespace = runpy.run_path(str(ROOT / "examples" / "compose.py"))
    out = namespace["main"](["--epochs", "1", "--run-dir", str(tmp_path / "compose")])
    assert 0.0 < out["after"]["knn_acc"] <= 1.0
    assert (tmp_path / "compose" / "encoder.safetensors").exists()


def _trained_state(tmp_path, registry, name: str, **overrides) -> tuple[dict, object]:
    cfg = tiny_pipeline(tmp_path, trainer__max_steps=4, **overrides)
    trainer, _ = train(cfg, tmp_path / name, registry)
    return trainer.objective.state_dict(), trainer


def test_channels_last_trains_the_same_weights(tmp_path, registry):
    reference, _ = _trained_state(tmp_path, registry, "contiguous")
    state, trainer = _trained_state(tmp_path, registry, "channels_last", trainer__channels_last=True)
    conv_weight = trainer.objective.encoder.blocks[1][0].weight  # [2w, w, 3, 3]
    assert conv_weight.is_contiguous(memory_format=torch.channels_last) and not conv_weight.is_contiguous()
    assert state.keys() == reference.keys()
    for key in reference:  # same arithmetic up to the order of float sums in the convolutions
        torch.testing.assert_close(state[key], reference[key], rtol=1e-3, atol=1e-4, msg=key)


@pytest.mark.slow
def test_compiled_encoders_train_the_same_weights(tmp_path, registry):
    reference, _ = _trained_state(tmp_path, registry, "eager")
    state, trainer = _trained_state(tmp_path, registry, "compiled", trainer__compile=True)
    assert trainer.objective.encoder._compiled_call_impl is not None  # nn.Module.compile() took effect
    assert trainer.objective.key_encoder._compiled_call_impl is not None
    assert state.keys() == reference.keys()  # checkpoints do not change with compilation
    for key in reference:
        torch.testing.assert_close(state[key], reference[key], rtol=1e-3, atol=1e-4, msg=key)


def test_compile_without_a_cpu_compiler_is_a_config_error(tmp_path, registry, monkeypatch):
    import shutil

    from selfsup.errors import ConfigError

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    cfg = tiny_pipeline(tmp_path, trainer__compile=True, trainer__device="cpu")
    with pytest.raises(ConfigError, match="trainer.compile: torch.compile on the CPU needs a C\\+\\+ compiler"):
        build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "run")


def test_set_total_steps_resumes_the_new_schedule_at_the_current_step(tmp_path, registry, recwarn):
    cfg = tiny_pipeline(tmp_path, trainer__max_steps=None, schedule={"name": "cosine", "warmup_epochs": 0.1})
    trainer = build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "run")
    assert trainer.total_steps == 22 and trainer.steps_per_epoch == 22  # warm-up round(2.2) = 2 steps
    batches = trainer.loader.epoch(0)
    for _ in range(5):
        trainer.train_step(*next(batches))
    trainer.set_total_steps(50)
    # warmup_cosine(50, 2) at step 5: 0.5 * (1 + cos(pi * 3 / 48)) of the base lr 0.05
    expected = 0.05 * 0.5 * (1 + math.cos(math.pi * 3 / 48))
    assert trainer.total_steps == 50
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)
    trainer.train_step(*next(batches))
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5 * (1 + math.cos(math.pi * 4 / 48)))
    assert not [w for w in recwarn if "lr_scheduler" in str(w.message)]
    with pytest.raises(ValueError, match="at least the steps already taken \\(6\\)"):
        trainer.set_total_steps(5)
