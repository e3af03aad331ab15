"""torch.distributed on CPU: gloo, 2 processes launched by torchrun (python -m torch.distributed.run).

One launch per session: ``distributed_worker.py`` runs ``selfsup train`` (its command-line
entry point) under torchrun, then unit scenarios and training runs on both ranks, and saves
what each rank saw; here the ranks are compared with each other and with one-process
references. In-process reference runs use one thread (the runs are tiny; more threads only
contend on a shared machine).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from selfsup.engine import build_trainer
from selfsup.engine.checkpoint import load
from selfsup.engine.loader import InMemoryBatches
from selfsup.errors import ConfigError, SelfsupError
from selfsup.data import ImageArrays
from selfsup.plugins.common.critics import DotCritic
from selfsup.plugins.common.estimators import InfoNCE
from selfsup.plugins.common.samplers import InBatchNegatives, MemoryBank, MomentumQueue

from support import torchrun

HERE = Path(__file__).resolve().parent
WORLD = 2


@pytest.fixture(scope="module")
def launch(tmp_path_factory) -> Path:
    """Run distributed_worker.py under torchrun once; its output folder."""
    out = tmp_path_factory.mktemp("worker")
    OmegaConf.save(OmegaConf.create(equivalence_pipeline(out, split_bn=1)), out / "pipeline.yaml")
    torchrun([str(HERE / "distributed_worker.py"), str(out)], cwd=out)
    return out


@pytest.fixture
def ranks(launch) -> list[dict]:
    """What each rank of distributed_worker.py saw."""
    return [torch.load(launch / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture
def cli_run(launch) -> Path:
    """The run folder of ``selfsup train pipeline.yaml`` with 2 processes."""
    return launch / "cli"


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def equivalence_pipeline(out_dir: Path, split_bn: int) -> dict:
    """No augmentation randomness and no shuffle-BN, so one process with split_bn=2 must match."""
    return {
        "seed": 3,
        "data": {"dataset": {"name": "digits"}, "augment": {"name": "identity"}, "batch_size": 64},
        "objective": {"name": "moco", "encoder": {"name": "small_conv", "width": 4}, "embedding_dim": 8,
                      "sampler": {"name": "momentum_queue", "size": 100}, "symmetric": True,
                      "shuffle_bn": False, "split_bn": split_bn},
        "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "trainer": {"epochs": 1, "max_steps": 6, "progress": False, "eval_before": False, "eval_after": False,
                    "out_dir": str(out_dir), "log_every": 2},
        "eval": {"linear_probe": False, "plots": False},
    }


# --------------------------------------------------------------------------- no processes needed
def test_loader_shards_concatenate_to_the_global_batch():
    split = ImageArrays(torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1), torch.arange(40))
    single = InMemoryBatches(split, 8, torch.device("cpu"), seed=1)
    shards = [InMemoryBatches(split, 8, torch.device("cpu"), seed=1, rank=r, world_size=WORLD) for r in range(WORLD)]
    assert len(single) == len(shards[0]) == 5
    for whole, *parts in zip(single.epoch(2), *(s.epoch(2) for s in shards)):
        assert [len(p[2]) for p in parts] == [4, 4]
        assert torch.equal(torch.cat([p[2] for p in parts]), whole[2])
    with pytest.raises(ConfigError, match="does not split evenly over 3 processes"):
        InMemoryBatches(split, 8, torch.device("cpu"), seed=1, rank=0, world_size=3)


def test_loader_cuts_a_partial_last_batch_to_equal_shards():
    split = ImageArrays(torch.zeros(21, 1, 1, 1), torch.zeros(21, dtype=torch.long))
    shard = InMemoryBatches(split, 8, torch.device("cpu"), seed=0, drop_last=False, rank=1, world_size=WORLD)
    assert [len(b[2]) for b in shard.epoch(0)] == [4, 4, 2]  # last batch of 5 -> 2 per rank
    tiny = ImageArrays(torch.zeros(17, 1, 1, 1), torch.zeros(17, dtype=torch.long))
    assert len(InMemoryBatches(tiny, 8, torch.device("cpu"), seed=0, drop_last=False, world_size=WORLD)) == 2


# --------------------------------------------------------------------------- helpers
@pytest.mark.distributed
def test_gather_and_shuffle_unshuffle_restore_order(ranks):
    for r, res in enumerate(ranks):
        h = res["helpers"]
        assert torch.equal(h["gathered"], h["x_global"])  # rank order
        assert torch.equal(h["restored"], h["x_local"])  # unshuffle undoes shuffle
    perms = [torch.argsort(res["helpers"]["unshuffle"]) for res in ranks]
    assert torch.equal(perms[0], perms[1])  # rank 0's permutation everywhere, though RNGs differ
    assert not torch.equal(perms[0], torch.arange(len(perms[0])))
    h = ranks[0]["helpers"]
    assert torch.equal(h["shuffled_global"], h["x_global"][perms[0]])  # each rank took its shard of it


@pytest.mark.distributed
@pytest.mark.parametrize("both_views", [False, True])
def test_gathered_in_batch_loss_equals_single_process_loss(ranks, both_views):
    q_global = ranks[0]["in_batch"]["q_global"].clone().requires_grad_(True)
    k_global = ranks[0]["in_batch"]["k_global"].clone().requires_grad_(True)
    scores = InBatchNegatives(both_views=both_views).score(DotCritic(0.5), q_global, k_global)
    loss = InfoNCE()(scores).loss
    loss.backward()
    per_rank = [res["in_batch"][f"both={both_views}"] for res in ranks]
    n = q_global.shape[0]
    assert all(p["negatives"] == (2 * n - 2 if both_views else n - 1) for p in per_rank)
    # the global loss is the mean of the per-rank losses (equal shards) ...
    torch.testing.assert_close(torch.stack([p["loss"] for p in per_rank]).mean(), loss.detach())
    # ... and each rank's rows get W x their share of its gradient (DDP then divides by W)
    rows = n // WORLD
    for r, p in enumerate(per_rank):
        torch.testing.assert_close(p["q_grad"], WORLD * q_global.grad[r * rows : (r + 1) * rows])
        torch.testing.assert_close(p["k_grad"], WORLD * k_global.grad[r * rows : (r + 1) * rows])


@pytest.mark.distributed
def test_queue_and_bank_are_identical_on_every_rank_and_equal_one_process(ranks):
    states = [res["state"] for res in ranks]
    for key in ("queue", "bank", "draws"):
        assert torch.equal(states[0][key], states[1][key]), key
    torch.manual_seed(0)  # the single-process reference: the same updates with the whole batch
    queue = MomentumQueue(size=10)
    queue.setup(3)
    bank = MemoryBank(num_negatives=5, momentum=0.5)
    bank.setup(3, num_samples=20)
    for step in range(4):
        g = torch.Generator().manual_seed(step)
        keys = torch.randn(WORLD * 3, 3, generator=g)
        index = torch.randperm(20, generator=g)[: WORLD * 3]
        queue.update(keys)
        assert torch.equal(bank.draw_negatives(torch.device("cpu")), states[0]["draws"][step])
        bank.update(keys, index)
    assert torch.equal(queue.keys, states[0]["queue"]) and int(queue.pointer) == states[0]["pointer"] == 4
    torch.testing.assert_close(bank.bank, states[0]["bank"], rtol=0, atol=1e-7)


# --------------------------------------------------------------------------- training runs
def _parameters_and_sampler(state: dict) -> dict:
    """Everything but BN running statistics (per rank by design: rank 0's are checkpointed)."""
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches_tracked" not in k}


@pytest.mark.distributed
def test_ranks_hold_the_same_model_and_queue(ranks):
    for run in ("full", "v3"):
        a, b = (_parameters_and_sampler(res["train"][run]) for res in ranks)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{run}: {key}"
    assert not torch.equal(ranks[0]["train"]["full"]["sampler.keys"], torch.zeros(1))


@pytest.mark.distributed
def test_a_minutes_budget_stops_every_rank_at_the_same_step(ranks):
    a, b = (res["train"] for res in ranks)
    assert a["timed_steps"] == b["timed_steps"] > 0 and a["timed_total_steps"] == b["timed_total_steps"]
    assert a["timed_total_steps"] < 10**9  # sized from rank 0's measured pace, on both ranks
    pa, pb = _parameters_and_sampler(a["timed"]), _parameters_and_sampler(b["timed"])
    for key in pa:
        assert torch.equal(pa[key], pb[key]), key


@pytest.mark.distributed
def test_resume_with_the_same_world_size_continues_exactly(ranks):
    for r, res in enumerate(ranks):
        train = res["train"]
        assert train["stopped_steps"] == 3 and train["resumed_steps"] == 6
        full, resumed = train["full"], train["resumed"]
        checked = full if r == 0 else _parameters_and_sampler(full)  # rank 0: every buffer too
        for key in checked:
            assert torch.equal(full[key], resumed[key]), f"rank {r}: {key}"
        assert torch.equal(train["augment_state"], train["resumed_augment_state"])  # reproducible per rank
    assert not torch.equal(ranks[0]["train"]["augment_state"], ranks[1]["train"]["augment_state"])  # distinct


@pytest.mark.distributed
def test_selfsup_train_under_torchrun_equals_one_process_with_the_same_global_batch(
    cli_run, tmp_path, registry, one_thread
):
    two = load(cli_run / "checkpoint.pt")
    assert two["world_size"] == WORLD and len(two["rng_per_rank"]) == WORLD
    rows = [json.loads(line) for line in (cli_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]  # written once, by rank 0
    assert (cli_run / "encoder.safetensors").exists()
    one_cfg = equivalence_pipeline(tmp_path, split_bn=WORLD)  # BN statistics per half batch, as per rank
    one = build_trainer(OmegaConf.create(one_cfg), registry, run_dir=tmp_path / "one")
    one.fit()
    expected = _parameters_and_sampler(one.objective.state_dict())
    got = _parameters_and_sampler(two["model"])
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)
    moved = (got["encoder.blocks.0.0.weight"] - build_trainer(OmegaConf.create(one_cfg), registry,
             run_dir=tmp_path / "init").objective.encoder.blocks[0][0].weight).abs().max()
    assert moved > 1e-3  # it trained: the agreement is not that of two untouched models


@pytest.mark.distributed
def test_resume_with_another_world_size_is_refused_but_evaluation_works(cli_run, registry, one_thread):
    cfg = OmegaConf.load(cli_run / "config.yaml")
    trainer = build_trainer(cfg, registry, run_dir=cli_run)
    with pytest.raises(SelfsupError, match="written by 2 process"):
        trainer.fit(resume=True)
    trainer.load_checkpoint()  # what `selfsup eval RUN_DIR` does, in one process
    assert trainer.global_step == 6
    saved = load(cli_run / "checkpoint.pt")["model"]["encoder.blocks.0.0.weight"]
    assert torch.equal(trainer.objective.encoder.blocks[0][0].weight, saved)
