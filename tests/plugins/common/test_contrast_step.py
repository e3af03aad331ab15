"""The shared contrast step: InfoNCE by hand, instance accuracy, keys stored in scoring order."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.plugins.common.contrast import ContrastStep
from selfsup.plugins.common.critics import DotCritic
from selfsup.plugins.common.estimators import InfoNCE
from selfsup.plugins.common.samplers import InBatchNegatives, MomentumQueue


def test_loss_and_logs_are_infonce_over_in_batch_negatives_by_hand():
    torch.manual_seed(0)
    query, key = torch.randn(6, 4), torch.randn(6, 4)
    step = ContrastStep.attach(nn.Module(), DotCritic(temperature=0.5), InfoNCE(), InBatchNegatives(), 4, 0)
    loss, logs = step(query, key, torch.arange(6))
    logits = query @ key.T / 0.5  # [6, 6]: row i's positive on the diagonal
    assert torch.allclose(loss, F.cross_entropy(logits, torch.arange(6)), atol=1e-6)
    assert torch.allclose(logs["mi"], torch.log(torch.tensor(6.0)) - loss, atol=1e-6)  # InfoNCE's bound
    off_diagonal = logits.masked_fill(torch.eye(6, dtype=torch.bool), float("-inf"))
    expected = (logits.diagonal() > off_diagonal.amax(dim=1)).float().mean()
    assert logs["instance_acc"] == expected


def test_keys_reach_the_sampler_after_the_step_in_scoring_order():
    bundle = nn.Module()
    step = ContrastStep.attach(bundle, DotCritic(), InfoNCE(), MomentumQueue(8), 2, 0)
    assert bundle.sampler is step.sampler and bundle.critic is step.critic  # parts stay the bundle's submodules
    assert "sampler.keys" in bundle.state_dict()  # checkpoints keep the keys they always had
    k1, k2 = F.normalize(torch.randn(2, 2), dim=1), F.normalize(torch.randn(2, 2), dim=1)
    q = F.normalize(torch.randn(2, 2), dim=1)
    step(q, k2, None)
    step(q, k1, None)
    step(q, k1 * 0, None, store=False)
    before = bundle.sampler.state_dict()
    assert all(torch.equal(v, before[k]) for k, v in bundle.sampler.state_dict().items())  # nothing stored yet
    step.store_keys()
    assert step.pending == []
    assert int(bundle.sampler.pointer) == 4  # two batches of two keys, the unstored call left out
    assert torch.equal(bundle.sampler.keys[:4], torch.cat([k2, k1]))  # in the order they were scored
