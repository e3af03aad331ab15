"""Batch statistics over the global batch on 2 gloo processes: GlobalBatchNorm (``sync_bn``)
and DIM's scores against every process's local maps, each rank against the rows one process
computes on the whole batch. (Whole objectives, Barlow Twins and VICReg among them, are
compared with one process by tests/core/test_distributed_conformance.py.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from batch_statistics_worker import BIAS, ROWS, SHAPES, WEIGHT, batch_norm_inputs, dim_inputs, scenarios
from torch import nn

from selfsup.plugins.dim.critics import score_local_map
from selfsup.testing import run_on_gloo

WORLD = 2
pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def ranks() -> list[dict]:
    """What each of the 2 ranks of batch_statistics_worker.scenarios saw (one launch)."""
    return run_on_gloo(scenarios, world_size=WORLD, timeout_s=300)[0]


@pytest.mark.parametrize("name", list(SHAPES))
def test_global_batchnorm_on_two_processes_is_one_batchnorm_on_the_whole_batch(ranks, name):
    x_global, readout = batch_norm_inputs(SHAPES[name])
    reference = (nn.BatchNorm1d if name == "2d" else nn.BatchNorm2d)(3)
    with torch.no_grad():
        reference.weight.copy_(WEIGHT), reference.bias.copy_(BIAS)
    x = x_global.clone().requires_grad_(True)
    y = reference(x)
    (y * readout).sum().backward()  # the sum of the ranks' losses
    for r, seen in enumerate(res[name] for res in ranks):
        rows = slice(r * ROWS, (r + 1) * ROWS)
        torch.testing.assert_close(seen["y"], y.detach()[rows])  # normalised with the global statistics
        torch.testing.assert_close(seen["x_grad"], x.grad[rows])  # through the statistics of both shards
        torch.testing.assert_close(seen["running_mean"], reference.running_mean)
        torch.testing.assert_close(seen["running_var"], reference.running_var)  # unbiased over 8 rows
    # each rank's parameter gradient is its own rows' share: DDP's sum (times W, then / W) is the total
    torch.testing.assert_close(sum(res[name]["weight_grad"] for res in ranks), reference.weight.grad)
    torch.testing.assert_close(sum(res[name]["bias_grad"] for res in ranks), reference.bias.grad)
    # and a per-shard batch norm would not have matched
    per_shard = F.batch_norm(x_global[:ROWS], None, None, WEIGHT, BIAS, training=True)
    assert not torch.allclose(per_shard, ranks[0][name]["y"], atol=1e-3)


@pytest.mark.parametrize("key", ["local_dot", "local_separable", "global_separable", "global_concat"])
def test_dim_scores_each_process_against_the_global_batch(ranks, key):
    code, local, critics = dim_inputs()
    critic = critics[key]
    with torch.no_grad():
        if key.startswith("local"):
            expected = score_local_map(critic, code, local)  # [8, 8, 4]
        else:
            expected = critic.similarity(code, local.flatten(1))  # [8, 8]
    for r, res in enumerate(ranks):
        got = res["dim"][key]
        assert got.shape[:2] == (ROWS, WORLD * ROWS)  # this rank's codes against all 8 images
        torch.testing.assert_close(got, expected[r * ROWS : (r + 1) * ROWS])
