"""SwAV: Sinkhorn-Knopp codes and the swapped-prediction loss against hand computations,
frozen and re-normalised prototypes, the queue, the global-batch Sinkhorn on 2 processes,
and on digits: kNN beats random init and the monitor flags the variant without equipartition."""

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
from selfsup.errors import CollapseDetected, ConfigError
from selfsup.interfaces import Batch
from selfsup.plugins.encoders.conv import SmallConvNet
from selfsup.plugins.noncontrastive.swav import SwAV, sinkhorn_knopp, swapped_prediction_loss
from selfsup.testing import run_on_gloo

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "swav_digits.yaml"


# --------------------------------------------------------------------------- Sinkhorn-Knopp
def test_one_sinkhorn_iteration_by_hand():
    # exp(scores / epsilon) = A = [[1, 2], [3, 4]]; N = K = 2
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    q = sinkhorn_knopp(0.05 * a.log(), epsilon=0.05, iterations=1)
    # columns / (K * column sums 4, 6): [[1/8, 1/6], [3/8, 1/3]]; rows normalised to 1:
    expected = torch.tensor([[3 / 7, 4 / 7], [9 / 17, 8 / 17]])
    torch.testing.assert_close(q, expected)
    # prototype totals after one iteration: 114/119 and 124/119, on their way to N/K = 1
    torch.testing.assert_close(q.sum(0), torch.tensor([114 / 119, 124 / 119]))


def test_codes_rows_sum_to_one_and_prototype_columns_to_n_over_k():
    torch.manual_seed(0)
    scores = F.normalize(torch.randn(12, 6), dim=1) @ F.normalize(torch.randn(4, 6), dim=1).T  # [N=12, K=4]
    q = sinkhorn_knopp(scores, epsilon=0.5, iterations=3)
    assert q.shape == (12, 4) and bool((q > 0).all())
    torch.testing.assert_close(q.sum(1), torch.ones(12))  # every code is a distribution, exactly
    assert torch.allclose(q.sum(0), torch.full((4,), 3.0), atol=0.05)  # N/K = 3 after 3 iterations
    converged = sinkhorn_knopp(scores, epsilon=0.5, iterations=100)
    torch.testing.assert_close(converged.sum(0), torch.full((4,), 3.0))  # exactly at convergence
    # a constant shift of the scores changes nothing (exp is normalised away)
    torch.testing.assert_close(sinkhorn_knopp(scores + 3.0, epsilon=0.5), q)


def test_sinkhorn_equipartitions_a_batch_that_prefers_one_prototype():
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])  # every row prefers prototype 0
    assert bool((F.softmax(scores / 0.05, 1).argmax(1) == 0).all())
    q = sinkhorn_knopp(scores, epsilon=0.05, iterations=50)
    torch.testing.assert_close(q.sum(0), torch.tensor([2.0, 2.0]), atol=1e-4, rtol=0)
    assert q.argmax(1).tolist() == [0, 0, 1, 1]  # the two rows that prefer 0 least go to 1


def test_sinkhorn_runs_in_float32_under_bf16_autocast_and_keeps_float64():
    torch.manual_seed(0)
    scores = torch.rand(8, 5).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = sinkhorn_knopp(scores)
    assert q.dtype == torch.float32
    torch.testing.assert_close(q, sinkhorn_knopp(scores.float()))
    torch.testing.assert_close(q.sum(1), torch.ones(8))
    assert sinkhorn_knopp(torch.rand(8, 5, dtype=torch.float64)).dtype == torch.float64
    # scores far apart against a small epsilon: exp underflows but nothing becomes NaN
    extreme = torch.tensor([[1.0, -1.0, -1.0], [1.0, -1.0, -1.0]])
    assert bool(torch.isfinite(sinkhorn_knopp(extreme, epsilon=0.001)).all())


def test_sinkhorn_refuses_bad_arguments():
    with pytest.raises(ValueError, match="shared_rows"):
        sinkhorn_knopp(torch.rand(4, 3), shared_rows=5)
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn_knopp(torch.rand(4, 3), epsilon=0.0)


# --------------------------------------------------------------------------- swapped prediction
def test_swapped_loss_averages_every_code_view_and_other_view_pair():
    torch.manual_seed(0)
    scores = [torch.randn(4, 5) for _ in range(3)]  # 2 global views + 1 local
    codes = [F.softmax(torch.randn(4, 5), 1) for _ in range(2)]
    by_hand = []
    for i, q in enumerate(codes):
        for j, s in enumerate(scores):
            if j != i:
                p = torch.exp(s / 0.1) / torch.exp(s / 0.1).sum(1, keepdim=True)
                by_hand.append(-(q * p.log()).sum(1).mean())
    assert len(by_hand) == 4  # (0,1), (0,2), (1,0), (1,2)
    terms = swapped_prediction_loss(scores, codes, temperature=0.1)
    torch.testing.assert_close(terms.loss, torch.stack(by_hand).mean())
    assert terms.agreement.item() == pytest.approx(-terms.loss.item())
    # uniform codes against constant scores: log K
    flat = swapped_prediction_loss([torch.zeros(4, 5)] * 2, [torch.full((4, 5), 0.2)] * 2)
    assert flat.loss.item() == pytest.approx(math.log(5))


# --------------------------------------------------------------------------- the bundle
def _swav(**kwargs) -> SwAV:
    torch.manual_seed(0)
    kwargs = {"embedding_dim": 8, "projector_hidden_dim": 16, "num_prototypes": 6, **kwargs}
    return SwAV(SmallConvNet(in_channels=1, image_size=8, width=4), **kwargs)


def _batch(n: int = 6, views: int = 2, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 8, 8, generator=g)
    return Batch(inputs=images, views=[(images + 0.05 * torch.randn(images.shape, generator=g)).clamp(0, 1)
                                       for _ in range(views)])


def test_the_bundle_computes_the_swapped_loss_on_its_codes():
    swav = _swav(freeze_prototypes_steps=0)
    batch = _batch()
    out = swav(batch)
    with torch.no_grad():
        z = [F.normalize(swav.projector(swav.encoder(v).global_), dim=1) for v in batch.views]
        scores = [zv @ swav.prototypes.T for zv in z]
        codes = [sinkhorn_knopp(s, 0.05, 3) for s in scores]
        expected = swapped_prediction_loss(scores, codes, 0.1).loss
    torch.testing.assert_close(out.loss.detach(), expected)
    assert {"agreement", "code_entropy", "prototypes_used"} <= set(out.logs)
    # without equipartition the codes are softmax(s / epsilon)
    broken = _swav(equipartition=False)
    torch.testing.assert_close(broken.codes(scores[0], 0), F.softmax(scores[0] / 0.05, 1))


def test_under_bf16_autocast_scores_and_codes_are_float32():
    swav = _swav(freeze_prototypes_steps=0)
    batch = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = swav.normalised_projection(batch.views[0])
        scores = swav.prototype_scores(z)
        out = swav(batch)
    assert z.dtype == torch.bfloat16 and scores.dtype == torch.float32
    assert swav.codes(scores, 0).dtype == torch.float32
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert swav.prototypes.grad is not None and bool(swav.prototypes.grad.abs().sum() > 0)


def test_prototypes_stay_frozen_then_move_and_stay_normalised():
    swav = _swav(freeze_prototypes_steps=2)
    initial = swav.prototypes.detach().clone()
    torch.testing.assert_close(initial.norm(dim=1), torch.ones(6))
    for step in range(4):
        swav.zero_grad()
        swav(_batch(seed=step)).loss.backward()
        frozen = step < 2
        assert swav.prototypes.grad is not None  # in the graph at every step (DDP's static graph)
        assert bool((swav.prototypes.grad == 0).all()) == frozen
        with torch.no_grad():  # SGD with a weight decay and noise: moves even zero-gradient parameters
            for p in swav.parameters():
                if p.grad is not None:
                    p.sub_(0.5 * (p.grad + 0.1 * p) + 0.01 * torch.randn_like(p))
        swav.after_step(step, 4)
        assert torch.equal(swav.prototypes.detach(), initial) == frozen
        torch.testing.assert_close(swav.prototypes.detach().norm(dim=1), torch.ones(6))  # re-normalised
    assert int(swav.steps_done) == 4


def test_the_queue_fills_after_its_start_step_and_joins_the_codes_once_full():
    swav = _swav(queue_size=8, queue_start_step=1, freeze_prototypes_steps=0)  # batches of 6: full after 2 fills
    assert swav.queue.shape == (2, 8, 8) and "queue" in swav.state_dict() and "queue_filled" in swav.state_dict()
    swav(_batch(seed=0))
    swav.after_step(0, 10)
    assert int(swav.queue_filled) == 0  # before queue_start_step
    batch = _batch(seed=1)
    swav(batch)
    with torch.no_grad():
        newest = [F.normalize(swav.projector(swav.encoder(v).global_), dim=1) for v in batch.views]
    swav.after_step(1, 10)
    assert int(swav.queue_filled) == 6 and not swav.queue_in_use()
    for view in range(2):  # newest first, the rest still empty
        torch.testing.assert_close(swav.queue[view, :6], newest[view])
        assert torch.count_nonzero(swav.queue[view, 6:]) == 0
    swav(_batch(seed=2))
    swav.after_step(2, 10)
    assert int(swav.queue_filled) == 8 and swav.queue_in_use()
    # in use: the codes of the batch are its rows of Sinkhorn over [queue; batch]
    scores = torch.rand(6, 6)
    with torch.no_grad():
        queued = swav.queue[1] @ swav.prototypes.T  # [8, K]
    expected = sinkhorn_knopp(torch.cat([queued, scores]), 0.05, 3)[8:]
    torch.testing.assert_close(swav.codes(scores, 1), expected)
    assert not torch.allclose(expected, sinkhorn_knopp(scores, 0.05, 3), atol=1e-3)


def test_multi_crop_codes_come_from_the_global_views():
    swav = _swav(global_views=2, local_views=1, freeze_prototypes_steps=0)
    assert swav.num_views == 3 and swav.pairs == [(0, 1), (0, 2), (1, 0), (1, 2)]
    batch = _batch(views=2)
    local = F.interpolate(batch.views[0], size=6)
    out = swav(Batch(inputs=batch.inputs, views=[*batch.views, local]))
    assert torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="expects 3 views"):
        swav(batch)


def test_a_multi_crop_pipeline_with_a_queue_trains_from_yaml(tmp_path, registry):
    cfg = tiny_pipeline(tmp_path, trainer__max_steps=3, data__batch_size=32)
    cfg["data"]["augment"] = {"name": "multi_crop", "local_size": 6}
    cfg["objective"] = {"name": "swav", "encoder": {"name": "small_conv", "width": 4}, "embedding_dim": 8,
                        "projector_hidden_dim": 16, "num_prototypes": 20, "local_views": 2, "queue_size": 64,
                        "freeze_prototypes_steps": 1}
    trainer = build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "run")
    assert trainer.objective.num_views == 4
    result = trainer.fit()
    swav = trainer.objective
    assert result.steps == 3 and int(swav.steps_done) == 3
    assert int(swav.queue_filled) == 64 and swav.queue_in_use()  # 32 rows per step, full after two
    torch.testing.assert_close(swav.prototypes.detach().norm(dim=1), torch.ones(20))


@pytest.mark.parametrize("params, key", [
    ({"num_prototypes": 1}, "num_prototypes"),
    ({"epsilon": 0.0}, "epsilon"),
    ({"queue_size": -1}, "queue_size"),
    ({"sinkhorn_iterations": 0}, "sinkhorn_iterations"),
])
def test_bad_parameters_become_config_errors_naming_the_key(registry, params, key):
    node = {"name": "swav", "encoder": {"name": "small_conv", "width": 2}, **params}
    with pytest.raises(ConfigError, match=f"objective: .*{key}"):
        build(registry, "objective", node, "objective", context={"in_channels": 1, "image_size": 8})


# --------------------------------------------------------------------------- 2 processes
def _rank_codes(global_scores: torch.Tensor, queue_scores: torch.Tensor) -> dict[str, torch.Tensor]:
    """On each of 2 gloo ranks: its shard's codes, without and with the (shared) queue's rows."""
    from selfsup import distributed

    rows = distributed.local_slice(global_scores.shape[0])
    shard = global_scores[rows]
    shared = queue_scores.shape[0]
    return {"plain": sinkhorn_knopp(shard, 0.1, 3),
            "queued": sinkhorn_knopp(torch.cat([queue_scores, shard]), 0.1, 3, shared_rows=shared)[shared:]}


@pytest.mark.distributed
def test_sinkhorn_on_two_processes_gives_the_rows_of_one_process_on_the_whole_batch():
    torch.manual_seed(0)
    global_scores, queue_scores = torch.rand(8, 5), torch.rand(6, 5)
    ranks, _ = run_on_gloo(_rank_codes, global_scores, queue_scores, world_size=2, timeout_s=120)
    plain = sinkhorn_knopp(global_scores, 0.1, 3)
    queued = sinkhorn_knopp(torch.cat([queue_scores, global_scores]), 0.1, 3)[6:]
    for r, seen in enumerate(ranks):
        torch.testing.assert_close(seen["plain"], plain[4 * r: 4 * r + 4])
        torch.testing.assert_close(seen["queued"], queued[4 * r: 4 * r + 4])
    # a Sinkhorn over each shard alone differs
    assert not torch.allclose(sinkhorn_knopp(global_scores[:4], 0.1, 3), plain[:4], atol=1e-3)


# --------------------------------------------------------------------------- digits
def _example(tmp_path) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(EXAMPLE))
    cfg["trainer"].update(progress=False, out_dir=str(tmp_path), loggers=[])
    cfg["eval"] = {"linear_probe": False, "plots": False}
    return cfg


@pytest.mark.slow
def test_swav_on_digits_beats_random_init(tmp_path, registry):
    """examples/swav_digits.yaml for 15 of its 30 epochs: kNN from 81.94% at random init to 93.89%."""
    cfg = _example(tmp_path)
    cfg["trainer"]["epochs"] = 15
    result = build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "run").fit()
    assert result.after["knn_acc"] > result.before["knn_acc"] + 0.05, (result.before, result.after)


@pytest.mark.slow
def test_monitor_flags_swav_without_equipartition_and_not_swav(tmp_path, registry):
    """examples/swav_digits.yaml's monitor, up to 150 steps: without equipartition every image
    takes one prototype and the rows of the prototype scores become equal (std below 0.01 by
    step 32); with Sinkhorn-Knopp they stay spread (about 0.057)."""
    cfg = _example(tmp_path)
    cfg["trainer"].update(epochs=None, max_steps=150, log_every=10, eval_before=False, eval_after=False)
    cfg["monitor"].update(every=10, stop_on_collapse=True)  # the broken variant stops where it is flagged
    flagged = {}
    for variant, switch in (("swav", {}), ("no_equipartition", {"equipartition": False})):
        run = OmegaConf.create({**cfg, "objective": {**cfg["objective"], **switch}})
        trainer = build_trainer(run, registry, run_dir=tmp_path / variant)
        try:
            trainer.fit()
        except CollapseDetected:
            assert trainer.global_step < 150
        flagged[variant] = trainer.monitor.collapse.key if trainer.monitor.collapse else None
    assert flagged == {"swav": None, "no_equipartition": "collapse_std"}, flagged
