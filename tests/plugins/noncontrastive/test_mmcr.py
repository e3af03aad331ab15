"""MMCR: the nuclear norm of the view centroids against known answers, the optional per-image
term, float32 under autocast, the bundle, and on digits: kNN beats random init, not flagged."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from support import tiny_pipeline

from selfsup.config import build
from selfsup.engine import build_trainer
from selfsup.errors import ConfigError
from selfsup.interfaces import Batch
from selfsup.plugins.encoders.conv import SmallConvNet
from selfsup.plugins.noncontrastive.mmcr import MMCR, centroids, mmcr_loss, nuclear_norm

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "mmcr_digits.yaml"


def test_nuclear_norm_by_hand():
    # diag(3, 4) has singular values 3 and 4; a rank-1 outer product a b^T has one, |a| |b|
    assert nuclear_norm(torch.tensor([[3.0, 0.0], [0.0, -4.0]])).item() == pytest.approx(7.0)
    a, b = torch.tensor([1.0, 2.0, 2.0]), torch.tensor([3.0, 4.0])
    assert nuclear_norm(torch.outer(a, b)).item() == pytest.approx(3.0 * 5.0, rel=1e-5)
    # batched: [..., M, D] -> [...]
    stacked = torch.stack([torch.eye(3), 2 * torch.eye(3)])
    torch.testing.assert_close(nuclear_norm(stacked), torch.tensor([3.0, 6.0]))


def test_orthonormal_centroids_give_n_and_a_collapsed_batch_sqrt_n():
    n, e = 4, 6
    basis = torch.eye(e)[:n]  # 4 orthonormal unit vectors
    spread = basis[:, None, :].expand(n, 2, e)  # both views of image i = e_i: centroids orthonormal
    assert mmcr_loss(spread).loss.item() == pytest.approx(-n)  # ||C||_* = N
    u = F.normalize(torch.ones(e), dim=0)
    collapsed = u.expand(n, 2, e)  # every view of every image is u: C = 1 u^T, rank 1
    assert mmcr_loss(collapsed).loss.item() == pytest.approx(-math.sqrt(n))  # sqrt(N) |u|
    # views that disagree shorten the centroids: e_i and -e_i average to 0
    opposite = torch.stack([basis, -basis], dim=1)
    torch.testing.assert_close(centroids(opposite), torch.zeros(n, e))
    assert mmcr_loss(opposite).loss.item() == pytest.approx(0.0, abs=1e-6)
    # two views at 90 degrees: centroid length 1/sqrt(2) each, orthogonal centroids: N / sqrt(2)
    half = torch.stack([torch.eye(2 * n)[:n], torch.eye(2 * n)[n:]], dim=1)  # [4, 2, 8]
    assert mmcr_loss(half).loss.item() == pytest.approx(-n / math.sqrt(2), rel=1e-5)


def test_the_per_image_term_is_lambda_times_the_mean_view_nuclear_norm():
    n = 3
    basis = torch.eye(4)
    agree = basis[:n, None, :].expand(n, 2, 4)  # ||Z_n||_* of two equal unit views: sqrt(2)
    terms = mmcr_loss(agree, lambda_views=0.5)
    assert terms.view_nuclear_norm.item() == pytest.approx(math.sqrt(2))
    assert terms.loss.item() == pytest.approx(-n + 0.5 * math.sqrt(2))
    orthogonal = torch.stack([basis[:n], basis[[1, 2, 3]]], dim=1)  # two orthogonal unit views: 2
    assert mmcr_loss(orthogonal, lambda_views=1.0).view_nuclear_norm.item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="lambda_views"):
        mmcr_loss(agree, lambda_views=-1.0)


def test_gradient_pulls_views_together_and_centroids_apart():
    torch.manual_seed(0)
    raw = torch.randn(8, 2, 6, requires_grad=True)
    start = mmcr_loss(F.normalize(raw, dim=-1)).loss
    with torch.no_grad():
        lengths = centroids(F.normalize(raw, dim=-1)).norm(dim=1).mean()
    for _ in range(200):  # plain gradient descent on the loss
        loss = mmcr_loss(F.normalize(raw, dim=-1)).loss
        grad, = torch.autograd.grad(loss, raw)
        with torch.no_grad():
            raw -= 0.5 * grad
    z = F.normalize(raw.detach(), dim=-1)
    assert mmcr_loss(z).loss.item() < start.item() - 1.0
    assert centroids(z).norm(dim=1).mean().item() > max(0.99, lengths.item())  # the views agree
    # 8 centroids in 6 dimensions: at most sqrt(8 * 6) for unit rows with equal singular values
    assert mmcr_loss(z).loss.item() == pytest.approx(-math.sqrt(48), rel=0.02)


def test_nuclear_norm_runs_in_float32_under_bf16_autocast_and_keeps_float64():
    x = torch.randn(6, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = nuclear_norm(x.bfloat16())
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, nuclear_norm(x.bfloat16().float()))
    assert nuclear_norm(x.double()).dtype == torch.float64


def _mmcr(**kwargs) -> MMCR:
    torch.manual_seed(0)
    return MMCR(SmallConvNet(in_channels=1, image_size=8, width=4), embedding_dim=8, projector_hidden_dim=16, **kwargs)


def test_the_bundle_takes_every_view_into_the_centroid():
    mmcr = _mmcr(global_views=3)
    assert mmcr.num_views == 3
    g = torch.Generator().manual_seed(0)
    views = [torch.rand(6, 1, 8, 8, generator=g) for _ in range(3)]
    out = mmcr(Batch(inputs=views[0], views=views))
    with torch.no_grad():
        z = torch.stack([F.normalize(mmcr.projector(mmcr.encoder(v).global_), dim=1) for v in views], dim=1)
    torch.testing.assert_close(out.loss.detach(), -nuclear_norm(z.mean(1)))
    torch.testing.assert_close(out.logs["centroid_length"], z.mean(1).norm(dim=1).mean())
    out.loss.backward()
    assert all(p.grad is not None for p in mmcr.encoder.parameters())
    with pytest.raises(ValueError, match="expects 3 views"):
        mmcr(Batch(inputs=views[0], views=views[:2]))
    # local crops join the centroid (multi_crop)
    crops = _mmcr(global_views=2, local_views=2)
    local = [F.interpolate(v, size=6) for v in views[:2]]
    assert torch.isfinite(crops(Batch(inputs=views[0], views=[*views[:2], *local])).loss)


def test_the_bundle_under_bf16_autocast_gives_a_float32_loss():
    mmcr = _mmcr()
    views = [torch.rand(6, 1, 8, 8) for _ in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mmcr(Batch(inputs=views[0], views=views))
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in mmcr.parameters() if p.grad is not None)


def test_multi_crop_and_more_views_train_from_yaml(tmp_path, registry):
    for run, augment, views in (("crops", {"name": "multi_crop", "local_size": 6}, {"local_views": 2}),
                                ("four", {"name": "two_view"}, {"global_views": 4})):
        cfg = tiny_pipeline(tmp_path, trainer__max_steps=2, data__batch_size=32)
        cfg["data"]["augment"] = augment
        cfg["objective"] = {"name": "mmcr", "encoder": {"name": "small_conv", "width": 4}, "embedding_dim": 8,
                            "projector_hidden_dim": 16, **views}
        trainer = build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / run)
        assert trainer.objective.num_views == 4
        assert trainer.fit().steps == 2


@pytest.mark.parametrize("params, key", [
    ({"lambda_views": -0.1}, "lambda_views"),
    ({"global_views": 1}, "global_views"),
    ({"embedding_dim": 0}, "embedding_dim"),
])
def test_bad_parameters_become_config_errors_naming_the_key(registry, params, key):
    node = {"name": "mmcr", "encoder": {"name": "small_conv", "width": 2}, **params}
    with pytest.raises(ConfigError, match=f"objective: .*{key}"):
        build(registry, "objective", node, "objective", context={"in_channels": 1, "image_size": 8})


@pytest.mark.slow
def test_mmcr_on_digits_beats_random_init_and_is_not_flagged(tmp_path, registry):
    """examples/mmcr_digits.yaml for 15 of its 30 epochs: kNN from 81.94% at random init to
    91.11%; its monitor (std and effective rank of the projections) never flags it."""
    cfg = OmegaConf.to_container(OmegaConf.load(EXAMPLE))
    cfg["trainer"].update(progress=False, out_dir=str(tmp_path), loggers=[], epochs=15)
    cfg["eval"] = {"linear_probe": False, "plots": False}
    cfg["monitor"]["stop_on_collapse"] = True
    trainer = build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "run")
    result = trainer.fit()
    assert trainer.monitor.collapse is None
    assert result.after["knn_acc"] > result.before["knn_acc"] + 0.05, (result.before, result.after)
