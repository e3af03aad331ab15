"""Multi-crop for SimCLR, BYOL and SimSiam: the view pairs by hand with 3-4 views, the two-view
default bit-identical to the two-view code path, the target seeing only the global views, a
few steps from YAML with ``multi_crop``, and the mistakes refused before training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from support import tiny_pipeline

from selfsup.engine import build_trainer
from selfsup.errors import ConfigError
from selfsup.interfaces import Batch
from selfsup.plugins.common.critics import NegSquaredEuclideanCritic
from selfsup.plugins.noncontrastive.base import pair_similarity, view_pairs
from selfsup.plugins.noncontrastive.byol import multi_view_byol_loss, symmetric_byol_loss
from selfsup.plugins.noncontrastive.simsiam import multi_view_simsiam_loss, simsiam_loss

METHODS = ["simclr", "byol", "simsiam"]


def make(registry, name, **params):
    encoder = registry.create("encoder", "small_conv", in_channels=1, image_size=8, width=2)
    torch.manual_seed(0)
    return registry.create("objective", name, encoder=encoder, embedding_dim=16, **params)


def multi_crop_batch(global_views=2, local_views=2, n=8, seed=0) -> Batch:
    """``global_views`` views ``[n, 1, 8, 8]`` then ``local_views`` views ``[n, 1, 4, 4]``."""
    g = torch.Generator().manual_seed(seed)
    views = [torch.rand(n, 1, 8, 8, generator=g) for _ in range(global_views)]
    views += [torch.rand(n, 1, 4, 4, generator=g) for _ in range(local_views)]
    return Batch(inputs=views[0], views=views, index=torch.arange(n))


# --------------------------------------------------------------------------- the pairs by hand
def test_pairs_are_every_global_view_against_every_other_view():
    assert view_pairs(2, 2) == [(0, 1), (1, 0)]
    assert view_pairs(1, 3) == [(0, 1), (0, 2)]
    assert view_pairs(2, 4) == [(0, 1), (0, 2), (0, 3), (1, 0), (1, 2), (1, 3)]


def test_byol_and_simsiam_known_answers_with_one_global_and_two_local_views():
    target = [torch.tensor([[1.0, 0.0]])]  # the global view's target
    predictions = [torch.tensor([[3.0, 3.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 0.0]])]
    # pairs (0, 1): cos 0, (0, 2): cos 1; view 0's own prediction is compared with nothing
    assert multi_view_byol_loss(predictions, target).loss.item() == pytest.approx(2 * ((2 - 0) + (2 - 2)) / 2)
    terms = multi_view_simsiam_loss(predictions, [target[0], *predictions[1:]], global_views=1)
    assert terms.loss.item() == pytest.approx(-(0.0 + 1.0) / 2) and terms.similarity.item() == pytest.approx(0.5)


@pytest.mark.parametrize("similarity", [None, NegSquaredEuclideanCritic()], ids=["cosine", "neg_sq_euclidean"])
def test_byol_and_simsiam_losses_average_over_the_pairs(similarity):
    s = (lambda a, b: F.cosine_similarity(a, b, dim=-1)) if similarity is None else (
        lambda a, b: -(a - b).square().sum(-1))
    kwargs = {} if similarity is None else {"similarity": pair_similarity(similarity)}
    g = torch.Generator().manual_seed(1)
    p = [torch.randn(5, 3, generator=g) for _ in range(4)]  # 2 global + 2 local
    z = [torch.randn(5, 3, generator=g) for _ in range(4)]
    byol_terms, simsiam_terms = [], []
    for i in range(2):  # the global views' targets
        for j in range(4):
            if j != i:
                byol_terms.append((2 - 2 * s(p[j], z[i])).mean())
                simsiam_terms.append(s(p[j], z[i]).mean())
    assert len(byol_terms) == 6
    assert torch.allclose(multi_view_byol_loss(p, z[:2], **kwargs).loss, 2 * torch.stack(byol_terms).mean())
    assert torch.allclose(multi_view_simsiam_loss(p, z, 2, **kwargs).loss, -torch.stack(simsiam_terms).mean())


def test_simclr_averages_the_contrast_step_over_every_global_key_and_other_query(registry):
    simclr = make(registry, "simclr", local_views=2)
    batch = multi_crop_batch()
    out = simclr(batch)
    z = [simclr.project(v) for v in batch.views]  # train mode: the same batch statistics as the step

    def one_direction(query, key, temperature=0.5):  # NT-Xent's anchors in `query`, 2N - 2 negatives
        q, k = F.normalize(query, dim=1), F.normalize(key, dim=1)
        n = q.shape[0]
        self_pairs = (q @ q.T).masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
        logits = torch.cat([q @ k.T, self_pairs], dim=1) / temperature  # [N, 2N]
        return F.cross_entropy(logits, torch.arange(n))

    by_hand = [one_direction(z[j], z[i]) for i in range(2) for j in range(4) if j != i]
    assert out.loss.item() == pytest.approx(torch.stack(by_hand).mean().item(), rel=1e-5)
    (key, _), = simclr.contrast.pending  # one set of keys stored per step: the last global view's
    assert torch.allclose(key, z[1])


# --------------------------------------------------------------------------- the default is unchanged
def _loss_and_grads(objective, compute):
    objective.zero_grad(set_to_none=True)
    loss = compute()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in objective.parameters() if p.grad is not None]


@pytest.mark.parametrize("method", METHODS)
def test_two_views_are_bit_identical_to_the_two_view_code_path(registry, method):
    objective = make(registry, method)
    batch = multi_crop_batch(local_views=0)
    v1, v2 = batch.views

    def two_view_path():  # the bundles' forward before multi-crop, step by step
        if method == "simclr":
            z1, z2 = objective.project(v1), objective.project(v2)
            loss12, _ = objective.contrast(z1, z2, batch.index)
            loss21, _ = objective.contrast(z2, z1, batch.index, store=False)
            objective.contrast.pending = []
            return (loss12 + loss21) / 2
        if method == "byol":
            _, p1 = objective._online(v1)
            _, p2 = objective._online(v2)
            return symmetric_byol_loss(p1, p2, objective._target(v1), objective._target(v2)).loss
        z1 = objective.projector(objective.encoder(v1).global_)
        z2 = objective.projector(objective.encoder(v2).global_)
        return simsiam_loss(objective.predictor(z1), objective.predictor(z2), z1, z2).loss

    new_loss, new_grads = _loss_and_grads(objective, lambda: objective(batch).loss)
    old_loss, old_grads = _loss_and_grads(objective, two_view_path)
    assert objective.num_views == 2 and torch.equal(new_loss, old_loss)
    assert len(new_grads) == len(old_grads) > 0 and all(torch.equal(a, b) for a, b in zip(new_grads, old_grads))


# --------------------------------------------------------------------------- who sees which view
def test_byol_target_sees_only_the_global_views(registry):
    byol = make(registry, "byol", global_views=2, local_views=2)
    seen = {"online": [], "target": []}
    byol.encoder.register_forward_hook(lambda m, args, out: seen["online"].append(tuple(args[0].shape)))
    byol.target_encoder.register_forward_hook(lambda m, args, out: seen["target"].append(tuple(args[0].shape)))
    out = byol(multi_crop_batch())
    assert seen["online"] == [(8, 1, 8, 8)] * 2 + [(8, 1, 4, 4)] * 2
    assert seen["target"] == [(8, 1, 8, 8)] * 2
    out.loss.backward()
    assert all(p.grad is None for p in byol.target_encoder.parameters())


@pytest.mark.parametrize("method", METHODS)
def test_wrong_number_of_views_says_how_to_make_them(registry, method):
    objective = make(registry, method, local_views=2)
    with pytest.raises(ValueError, match=r"expects 4 views \(2 global first, then 2 local\), got 2; set data.augment: "
                                         r"\{name: multi_crop, global_crops: 2\} with objective.local_views: 2"):
        objective(multi_crop_batch(local_views=0))


# --------------------------------------------------------------------------- from YAML
def pipeline(tmp_path, method, augment, **objective):
    cfg = tiny_pipeline(tmp_path, trainer__max_steps=2, data__batch_size=32)
    cfg["data"]["augment"] = augment
    cfg["objective"] = {"name": method, "encoder": {"name": "small_conv", "width": 4}, "embedding_dim": 16,
                        **objective}
    return OmegaConf.create(cfg)


@pytest.mark.parametrize("method", METHODS)
def test_multi_crop_trains_from_yaml(tmp_path, registry, method):
    extra = {"similarity": {"name": "neg_sq_euclidean"}} if method == "byol" else {}
    cfg = pipeline(tmp_path, method, {"name": "multi_crop", "global_crops": 2}, local_views=2, **extra)
    trainer = build_trainer(cfg, registry, run_dir=tmp_path / "run")
    shapes = set()
    trainer.objective.encoder.register_forward_hook(lambda m, args, out: shapes.add(tuple(args[0].shape[1:])))
    before = [p.detach().clone() for p in trainer.objective.encoder.parameters()]
    result = trainer.fit()
    assert result.steps == 2 and trainer.objective.num_views == 4
    assert {(1, 8, 8), (1, 4, 4)} <= shapes  # global crops at the image size, local ones at 96/224 of it (4 px)
    assert any(not torch.equal(b, a) for b, a in zip(before, trainer.objective.encoder.parameters()))


# --------------------------------------------------------------------------- mistakes, before training
@pytest.mark.parametrize("method", [*METHODS, "dino"])
def test_local_views_without_multi_crop_are_refused_naming_the_keys(tmp_path, registry, method):
    cfg = pipeline(tmp_path, method, {"name": "two_view"}, local_views=4)
    if method == "dino":
        cfg.objective = {"name": "dino", "encoder": {"name": "small_conv", "width": 4}, "local_views": 4}
    with pytest.raises(ConfigError, match=r"data.augment: TwoViewAugment makes every view at the image size, but "
                                          r"objective.local_views .* 4 local crops .*\{name: multi_crop, global_crops: 2\}"):
        build_trainer(cfg, registry, run_dir=tmp_path / "run")


def test_global_crops_that_disagree_with_global_views_are_refused(tmp_path, registry):
    cfg = pipeline(tmp_path, "byol", {"name": "multi_crop", "global_crops": 1}, local_views=2)
    with pytest.raises(ConfigError, match=r"data.augment.global_crops: 1, but objective.global_views is 2"):
        build_trainer(cfg, registry, run_dir=tmp_path / "run")


def test_a_local_crop_the_encoder_cannot_read_is_refused(tmp_path, registry):
    cfg = pipeline(tmp_path, "simsiam", {"name": "multi_crop", "local_size": 2}, local_views=2)
    cfg.objective.encoder.pool_size = 2  # a 2x2 grid; a 2-pixel crop leaves a 1x1 map
    with pytest.raises(ConfigError, match=r"data.augment: the model cannot read view 3 of 4 \(\(2, 1, 2, 2\).*"
                                          r"pool_size 2 is larger than the 1x1 last feature map.*local_size"):
        build_trainer(cfg, registry, run_dir=tmp_path / "run")


def test_bad_view_counts_name_the_key(tmp_path, registry):
    cfg = pipeline(tmp_path, "simclr", {"name": "two_view"}, global_views=1, local_views=0)
    with pytest.raises(ConfigError, match=r"objective: .*global_views must be >= 1 and local_views >= 0, with at "
                                          r"least 2 views in all; got global_views 1 and local_views 0"):
        build_trainer(cfg, registry, run_dir=tmp_path / "run")
