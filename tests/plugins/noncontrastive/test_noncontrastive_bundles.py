"""The five bundles: wiring, stop-gradients, momentum targets, options, and training from YAML."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from selfsup.cli import main as cli_main
from selfsup.config import load_pipeline
from selfsup.engine import build_trainer
from selfsup.engine.optim import build_optimizer, build_scheduler
from selfsup.errors import ConfigError
from selfsup.config import OptimConfig, ScheduleConfig, build
from selfsup.interfaces import Batch
from selfsup.plugins.noncontrastive.barlow_twins import barlow_twins_loss
from selfsup.plugins.noncontrastive.simclr import nt_xent_loss
from selfsup.plugins.noncontrastive.vicreg import vicreg_loss

ROOT = Path(__file__).resolve().parents[3]
METHODS = ["simclr", "byol", "simsiam", "barlow_twins", "vicreg"]


def make(registry, name, **params):
    encoder = registry.create("encoder", "small_conv", in_channels=1, image_size=8, width=2)
    torch.manual_seed(0)
    return registry.create("objective", name, encoder=encoder, **params)


def batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    views = [torch.rand(n, 1, 8, 8, generator=g) for _ in range(2)]
    return Batch(inputs=views[0], views=views)


def test_bundles_are_registered_and_listed(registry, capsys):
    assert set(METHODS) <= set(registry.names("objective"))
    assert cli_main(["plugins", "list", "objective"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in METHODS)
    catalogue = (ROOT / "registry.yaml").read_text()
    assert all(f"{name}:" in catalogue for name in METHODS)


def test_simclr_bundle_is_nt_xent_with_2n_minus_2_negatives(registry):
    simclr = make(registry, "simclr")
    b = batch()
    out = simclr(b)
    z1, z2 = simclr.project(b.views[0]), simclr.project(b.views[1])  # same batch statistics in train mode
    assert out.loss.item() == pytest.approx(nt_xent_loss(z1, z2, 0.5).loss.item(), rel=1e-5)
    scores = simclr.sampler.score(simclr.critic, z1, z2)
    assert scores.negative.shape == (16, 2 * 16 - 2)


def test_byol_target_gets_no_gradient_and_is_not_optimised(registry):
    byol = make(registry, "byol")
    byol(batch()).loss.backward()
    target = list(byol.target_encoder.parameters()) + list(byol.target_projector.parameters())
    assert target and all(p.grad is None and not p.requires_grad for p in target)
    assert all(p.grad is not None for p in byol.predictor.parameters())
    optimised = {id(p) for g in byol.parameter_groups() for p in g["params"]}
    assert not optimised & {id(p) for p in target}


def test_byol_momentum_update_by_hand_and_cosine_schedule(registry):
    byol = make(registry, "byol", momentum=0.9)
    with torch.no_grad():
        for p in byol.encoder.parameters():
            p.add_(1.0)  # online differs from target by exactly 1
    before = [p.clone() for p in byol.target_encoder.parameters()]
    byol.after_step(0, 10)  # cosine schedule starts at the base momentum
    assert byol.last_momentum == pytest.approx(0.9)
    for old, new, online in zip(before, byol.target_encoder.parameters(), byol.encoder.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * online)
    byol.after_step(5, 10)
    assert byol.last_momentum == pytest.approx(0.95)  # halfway: 1 - 0.1 * (cos(pi/2) + 1) / 2
    before = [p.clone() for p in byol.target_encoder.parameters()]
    byol.after_step(10, 10)  # momentum 1: the target stays
    assert byol.last_momentum == pytest.approx(1.0)
    for old, new in zip(before, byol.target_encoder.parameters()):
        torch.testing.assert_close(new, old)


def test_simsiam_options(registry):
    simsiam = make(registry, "simsiam", embedding_dim=64)
    assert simsiam.predictor[0].out_features == 16  # bottleneck embedding_dim // 4
    assert isinstance(make(registry, "simsiam", predictor=False).predictor, torch.nn.Identity)
    with pytest.raises(ValueError, match="needs a predictor"):
        make(registry, "simsiam", predictor=False, fixed_predictor_lr=True)


def encoder_grads(model, loss):
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.encoder.parameters()])


def test_simsiam_stop_gradient_reaches_the_loss(registry):
    b = batch()
    stopped = make(registry, "simsiam", stop_gradient=True)
    flowing = make(registry, "simsiam", stop_gradient=False)  # same seed: same weights
    g_stopped = encoder_grads(stopped, stopped(b).loss)
    g_flowing = encoder_grads(flowing, flowing(b).loss)
    # by hand: the same loss with the compared projections detached
    z1, z2 = stopped.project(b.views[0]), stopped.project(b.views[1])
    p1, p2 = stopped.predictor(z1), stopped.predictor(z2)
    cos = torch.nn.functional.cosine_similarity
    manual = -0.5 * (cos(p1, z2.detach()).mean() + cos(p2, z1.detach()).mean())
    torch.testing.assert_close(g_stopped, encoder_grads(stopped, manual), rtol=1e-4, atol=1e-7)
    assert not torch.allclose(g_stopped, g_flowing, rtol=1e-3, atol=1e-6)


def test_simsiam_fixed_predictor_lr_keeps_the_predictor_lr_while_the_rest_decays(registry):
    simsiam = make(registry, "simsiam", fixed_predictor_lr=True)
    groups = simsiam.parameter_groups()
    assert [g.get("fixed_lr", False) for g in groups] == [False, True]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in simsiam.predictor.parameters()}
    optimizer = build_optimizer(groups, OptimConfig(lr=0.1), batch_size=256)
    scheduler = build_scheduler(optimizer, ScheduleConfig(name="cosine"), total_steps=10, steps_per_epoch=5)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)  # cosine halfway
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.1)  # fixed


def test_barlow_twins_and_vicreg_bundles_wrap_their_losses(registry):
    b = batch()
    barlow = make(registry, "barlow_twins", embedding_dim=32, projector_hidden_dim=32)
    out = barlow(b)
    z1, z2 = barlow.project(b.views[0]), barlow.project(b.views[1])
    assert out.loss.item() == pytest.approx(barlow_twins_loss(z1, z2).loss.item(), rel=1e-4)
    assert {"on_diagonal", "off_diagonal"} <= set(out.logs)
    vicreg = make(registry, "vicreg", embedding_dim=32, projector_hidden_dim=32)
    out = vicreg(b)
    z1, z2 = vicreg.project(b.views[0]), vicreg.project(b.views[1])
    assert out.loss.item() == pytest.approx(vicreg_loss(z1, z2).loss.item(), rel=1e-4)
    assert {"invariance", "variance", "covariance"} <= set(out.logs)


@pytest.mark.parametrize("params, message", [
    ({"name": "barlow_twins", "lambda_offdiag": -1.0}, "lambda_offdiag"),
    ({"name": "vicreg", "variance_weight": -1.0}, "variance_weight"),
    ({"name": "byol", "momentum": 1.5}, "momentum"),
    ({"name": "simsiam", "predictor": False, "fixed_predictor_lr": True}, "predictor"),
])
def test_bad_parameters_become_config_errors(registry, params, message):
    node = {**params, "encoder": {"name": "small_conv", "width": 2}}
    with pytest.raises(ConfigError, match=f"objective: .*{message}"):
        build(registry, "objective", node, "objective", context={"in_channels": 1, "image_size": 8})


def test_bundles_need_two_views(registry):
    with pytest.raises(ValueError, match="2 augmented views"):
        make(registry, "vicreg")(Batch(inputs=torch.rand(4, 1, 8, 8)))


@pytest.mark.parametrize("method", METHODS)
def test_example_pipeline_trains_a_few_steps_with_the_monitor(method, tmp_path, registry):
    cfg = load_pipeline(ROOT / "examples" / f"{method}_digits.yaml", [
        "objective.encoder.width=4", "objective.embedding_dim=32", "objective.projector_hidden_dim=32",
        "data.batch_size=32", "trainer.epochs=1", "trainer.max_steps=3",
        "trainer.log_every=1", "trainer.progress=false", "trainer.eval_before=false", "eval.linear_probe=false",
        "eval.plots=false", "monitor.probe_size=64", "monitor.every=2", "monitor.collapse_std=null",
        "monitor.collapse_rank=null",
    ])
    trainer = build_trainer(cfg, registry, run_dir=tmp_path / method)
    result = trainer.fit()
    assert result.steps == 3 and not result.interrupted
    rows = [json.loads(line) for line in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    measured = [r["step"] for r in rows if "effective_rank" in r]
    assert measured == [1, 3]  # the first logging step, then every 2 steps
    summary = json.loads((tmp_path / method / "metrics.json").read_text())
    values = summary["monitor"]["values"]
    assert set(values) == {"embedding_std", "effective_rank", "alignment", "uniformity", "knn_accuracy"}
    assert 1.0 <= values["effective_rank"] <= 64 and values["uniformity"] <= 0.0
    assert summary["monitor"]["collapse"] is None
    saved = OmegaConf.load(tmp_path / method / "config.yaml")
    assert saved.monitor.source == "project" and saved.objective.name == method
