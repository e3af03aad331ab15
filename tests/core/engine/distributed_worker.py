"""Run by ``torchrun --nproc_per_node 2`` from test_distributed.py.

First ``selfsup train OUT/pipeline.yaml --run-dir OUT/cli`` through the command line's entry
point (what the ``selfsup`` console script runs; it joins the process group from torchrun's
environment variables). Then every rank runs the same scenarios and saves what it saw to
``OUT/rank{r}.pt``; the test compares ranks with each other and with single-process
references. One launch for everything keeps the tests fast (each process imports torch once).

    python -m torch.distributed.run --standalone --nproc_per_node 2 distributed_worker.py OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from selfsup import distributed
from selfsup.engine import build_trainer
from selfsup.plugin_manager import load_registry
from selfsup.plugins.common.critics import DotCritic
from selfsup.plugins.common.estimators import InfoNCE
from selfsup.plugins.common.samplers import InBatchNegatives, MemoryBank, MomentumQueue

ROWS = 4  # rows per rank in the unit scenarios


def pipeline(run_root: Path, **objective) -> dict:
    """MoCo on digits, batch 64 (32 per rank), a queue of 100 (not a multiple of 64)."""
    return {
        "seed": 0,
        "data": {"dataset": {"name": "digits"}, "augment": {"name": "two_view"}, "batch_size": 64},
        "objective": {"name": "moco", "encoder": {"name": "small_conv", "width": 4},
                      "sampler": {"name": "momentum_queue", "size": 100}, "embedding_dim": 8,
                      "symmetric": True, **objective},
        "optim": {"name": "sgd", "lr": 0.05},
        "trainer": {"epochs": 1, "max_steps": 6, "progress": False, "eval_before": False,
                    "eval_after": False, "out_dir": str(run_root), "log_every": 2},
        "eval": {"linear_probe": False, "plots": False},
    }


def helpers(rank: int, world: int) -> dict:
    torch.manual_seed(123)  # the same "global batch" on every rank
    x_global = torch.randn(world * ROWS, 3)
    x_local = x_global[rank * ROWS : (rank + 1) * ROWS]
    torch.manual_seed(1000 + rank)  # different RNG per rank: the permutation must still be rank 0's
    shuffled, unshuffle = distributed.shuffle_batch(x_local)
    return {
        "x_global": x_global,
        "gathered": distributed.gather(x_local),
        "shuffled_global": distributed.gather(shuffled),
        "unshuffle": unshuffle,
        "restored": distributed.unshuffle_batch(shuffled, unshuffle),
        "x_local": x_local,
    }


def in_batch(rank: int, world: int) -> dict:
    torch.manual_seed(7)
    q_global = F.normalize(torch.randn(world * ROWS, 8), dim=1)
    k_global = F.normalize(torch.randn(world * ROWS, 8), dim=1)
    out = {"q_global": q_global, "k_global": k_global}
    for both in (False, True):
        q = q_global[rank * ROWS : (rank + 1) * ROWS].clone().requires_grad_(True)
        k = k_global[rank * ROWS : (rank + 1) * ROWS].clone().requires_grad_(True)
        scores = InBatchNegatives(both_views=both).score(DotCritic(0.5), q, k)
        loss = InfoNCE()(scores).loss
        loss.backward()
        out[f"both={both}"] = {"loss": loss.detach(), "q_grad": q.grad, "k_grad": k.grad,
                               "negatives": scores.negative.shape[1]}
    return out


def queue_and_bank(rank: int, world: int) -> dict:
    torch.manual_seed(0)
    queue = MomentumQueue(size=10)
    queue.setup(3)
    bank = MemoryBank(num_negatives=5, momentum=0.5)
    bank.setup(3, num_samples=20)
    draws = []
    for step in range(4):
        g = torch.Generator().manual_seed(step)
        keys = torch.randn(world * 3, 3, generator=g)
        index = torch.randperm(20, generator=g)[: world * 3]
        mine = slice(rank * 3, (rank + 1) * 3)
        queue.update(keys[mine])
        draws.append(bank.draw_negatives(torch.device("cpu")))
        bank.update(keys[mine], index[mine])
    return {"queue": queue.keys.clone(), "pointer": int(queue.pointer), "bank": bank.bank.clone(),
            "draws": torch.stack(draws)}


def train_runs(root: Path, rank: int) -> dict:
    registry = load_registry().registry
    cfg = pipeline(root)
    full = build_trainer(OmegaConf.create(cfg), registry, run_dir=root / "full")
    full.fit()
    split = build_trainer(OmegaConf.create(cfg), registry, run_dir=root / "split")
    original = split.objective.after_step

    def after_step(step: int, total: int) -> None:
        original(step, total)
        if step + 1 == 3:
            split.request_stop()  # every rank asks, as a signal to the process group would

    split.objective.after_step = after_step
    stopped = split.fit()
    resumed = build_trainer(OmegaConf.create(cfg), registry, run_dir=root / "split")
    result = resumed.fit(resume=True)
    v3_cfg = pipeline(root, name="moco_v3", hidden_dim=16)
    for key in ("sampler", "symmetric"):
        v3_cfg["objective"].pop(key)
    v3 = build_trainer(OmegaConf.create(v3_cfg), registry, run_dir=root / "v3")
    v3.fit()
    # a minutes budget: rank 0's clock decides when to stop, re-size and evaluate; rank 1 follows
    timed_cfg = pipeline(root)
    timed_cfg["trainer"].update(epochs=None, max_steps=None, max_minutes=0.03)
    timed_cfg["eval"]["every_minutes"] = 0.01
    timed = build_trainer(OmegaConf.create(timed_cfg), registry, run_dir=root / "timed")
    timed_result = timed.fit()
    return {
        "timed": {k: v.clone() for k, v in timed.objective.state_dict().items()},
        "timed_steps": timed_result.steps,
        "timed_total_steps": timed.total_steps,
        "full": {k: v.clone() for k, v in full.objective.state_dict().items()},
        "stopped_steps": stopped.steps,
        "resumed_steps": result.steps,
        "resumed": {k: v.clone() for k, v in resumed.objective.state_dict().items()},
        "v3": {k: v.clone() for k, v in v3.objective.state_dict().items()},
        "augment_state": full.augment_generator.get_state(),
        "resumed_augment_state": resumed.augment_generator.get_state(),
    }


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    from selfsup.cli import main as selfsup_main

    code = selfsup_main(["train", str(out / "pipeline.yaml"), "--run-dir", str(out / "cli")])
    assert code == 0, code
    assert distributed.is_initialized()  # joined by the trainer, from the environment
    info, _ = distributed.init_from_env(torch.device("cpu"))
    assert info.world_size == 2, info
    results = {
        "world": info.world_size,
        "helpers": helpers(info.rank, info.world_size),
        "in_batch": in_batch(info.rank, info.world_size),
        "state": queue_and_bank(info.rank, info.world_size),
        "train": train_runs(out, info.rank),
    }
    torch.save(results, out / f"rank{info.rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
