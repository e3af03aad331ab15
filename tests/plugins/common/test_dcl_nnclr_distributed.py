"""DCLW and nearest-neighbour positives on 2 gloo processes equal 1 process on the whole batch
(selfsup.testing.run_distributed_conformance, one launch for every variant below).

DCLW's weights are a softmax over the positives of the global batch; NNCLR's rows are scored
against the queries of the global batch, with a support queue that every process holds alike.
A DCLW whose softmax runs over each process's own positives must fail the check.
"""

from __future__ import annotations

import pytest
import torch

from selfsup import distributed
from selfsup.interfaces import Encoder, Estimate, Scores
from selfsup.plugin_manager import load_registry
from selfsup.plugins.common.estimators import DecoupledContrastive, row_logsumexp
from selfsup.plugins.common.nearest_neighbour import NearestNeighbourPositives
from selfsup.plugins.moco.objective import MoCo
from selfsup.plugins.noncontrastive.simclr import SimCLR
from selfsup.testing.distributed import run_distributed_conformance

EMBEDDING = 8


class PerProcessDCLW(DecoupledContrastive):
    """Wrong under torch.distributed: the weights' softmax runs over this process's positives only."""

    def forward(self, scores: Scores) -> Estimate:
        pos = scores.positive
        weights = 2.0 - pos.numel() * torch.softmax(pos.detach().flatten() / self.sigma, dim=0).view_as(pos)
        loss = (row_logsumexp(scores.negative) - weights * pos).mean()
        return Estimate(loss=loss, mi=loss.detach())


def prefill(sampler: NearestNeighbourPositives, rows: int = 20) -> None:
    """Write ``rows`` seeded random keys into the support queue: each process enqueues its shard, as in training."""
    keys = torch.randn(rows, EMBEDDING)  # the same draw on every process (built after the same seed)
    sampler.update(keys[distributed.local_slice(rows)])  # gathered in rank order: the same rows everywhere


def simclr_dclw(encoder: Encoder) -> SimCLR:
    return SimCLR(encoder, estimator=DecoupledContrastive(sigma=1.0), embedding_dim=EMBEDDING, projector_hidden_dim=8)


def simclr_dclw_per_process(encoder: Encoder) -> SimCLR:
    return SimCLR(encoder, estimator=PerProcessDCLW(sigma=1.0), embedding_dim=EMBEDDING, projector_hidden_dim=8)


def simclr_nnclr_empty(encoder: Encoder) -> SimCLR:
    return SimCLR(encoder, sampler=NearestNeighbourPositives(size=32), embedding_dim=EMBEDDING, projector_hidden_dim=8)


def simclr_nnclr(encoder: Encoder) -> SimCLR:
    objective = SimCLR(encoder, sampler=NearestNeighbourPositives(size=32), embedding_dim=EMBEDDING,
                       projector_hidden_dim=8)
    prefill(objective.sampler)
    return objective


def moco_nnclr_dclw(encoder: Encoder) -> MoCo:
    objective = MoCo(encoder, estimator=DecoupledContrastive(sigma=1.0), sampler=NearestNeighbourPositives(size=32),
                     embedding_dim=EMBEDDING, symmetric=True)
    prefill(objective.sampler)
    return objective


VARIANTS = {"simclr_dclw": simclr_dclw, "simclr_dclw_per_process": simclr_dclw_per_process,
            "simclr_nnclr_empty": simclr_nnclr_empty, "simclr_nnclr": simclr_nnclr, "moco_nnclr_dclw": moco_nnclr_dclw}


@pytest.fixture(scope="module")
def rows():
    registry = load_registry(autoload=False).registry
    for name, factory in VARIANTS.items():
        registry.register("objective", name, factory)
    return {r.name: r for r in run_distributed_conformance(registry, names=list(VARIANTS), timeout_s=300)}


@pytest.mark.distributed
@pytest.mark.parametrize("name", ["simclr_dclw", "simclr_nnclr_empty", "simclr_nnclr", "moco_nnclr_dclw"])
def test_two_processes_take_the_one_process_step(rows, name):
    assert rows[name].status == "pass", rows[name].detail


@pytest.mark.distributed
def test_per_process_dclw_weights_fail_the_check(rows):
    assert rows["simclr_dclw_per_process"].status == "fail"
    assert "on 2 processes but" in rows["simclr_dclw_per_process"].detail


def test_the_prefilled_queue_holds_the_seeded_keys_in_one_process():
    torch.manual_seed(0)
    expected = torch.randn(20, EMBEDDING)
    torch.manual_seed(0)
    sampler = NearestNeighbourPositives(size=32)
    sampler.setup(EMBEDDING)
    prefill(sampler)
    assert int(sampler.filled) == 20 and torch.equal(sampler.support[:20], expected)
