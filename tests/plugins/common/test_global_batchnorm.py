"""GlobalBatchNorm (``sync_bn``) in one process: exactly nn.BatchNorm1d, and where heads build it.

The two-process behaviour (statistics of the global batch) is tested with gloo in
tests/plugins/test_distributed_batch_statistics.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from selfsup.config import build
from selfsup.distributed import SplitBatchNorm, convert_split_batchnorm
from selfsup.errors import ConfigError
from selfsup.plugins.common.global_batchnorm import GlobalBatchNorm
from selfsup.plugins.common.heads import MLPHead
from selfsup.plugins.encoders.conv import SmallConvNet
from selfsup.plugins.noncontrastive.barlow_twins import BarlowTwins
from selfsup.plugins.noncontrastive.vicreg import VICReg

CONTEXT = {"in_channels": 1, "image_size": 8, "num_classes": 10, "num_train": 64}


def _pair(momentum: float | None) -> tuple[nn.BatchNorm1d, GlobalBatchNorm]:
    torch.manual_seed(0)
    reference = nn.BatchNorm1d(3, momentum=momentum)
    with torch.no_grad():
        reference.weight.copy_(torch.tensor([0.5, 1.0, 2.0]))
        reference.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    ours = GlobalBatchNorm(3, momentum=momentum)
    ours.load_state_dict(reference.state_dict())  # the same keys
    return reference, ours


@pytest.mark.parametrize("momentum", [0.1, None])
def test_one_process_global_batchnorm_is_batchnorm1d(momentum):
    reference, ours = _pair(momentum)
    assert ours.state_dict().keys() == reference.state_dict().keys()
    for step in range(2):  # running statistics compound over two steps
        x = torch.randn(6, 3) * 3 + 2
        readout = torch.randn(6, 3)
        x_ref, x_ours = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        expected, got = reference(x_ref), ours(x_ours)
        torch.testing.assert_close(got, expected)
        (expected * readout).sum().backward()
        (got * readout).sum().backward()
        torch.testing.assert_close(x_ours.grad, x_ref.grad)
        torch.testing.assert_close(ours.weight.grad, reference.weight.grad)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, msg=key)
    reference.eval(), ours.eval()
    x = torch.randn(4, 3)
    torch.testing.assert_close(ours(x), reference(x))  # eval: the running statistics


def test_the_cuda_path_reads_only_what_global_batchnorm_has():
    """On CUDA GlobalBatchNorm runs nn.SyncBatchNorm.forward on itself; without a process group
    that forward is a plain batch norm, so on CPU it must equal BatchNorm1d (same attributes)."""
    reference, ours = _pair(0.1)
    x = torch.randn(5, 3)
    torch.testing.assert_close(nn.SyncBatchNorm.forward(ours, x), reference(x))
    torch.testing.assert_close(ours.running_mean, reference.running_mean)


def test_split_conversion_keeps_global_batchnorm_and_frozen_parameters():
    head = nn.Sequential(nn.Linear(3, 3), GlobalBatchNorm(3), nn.BatchNorm1d(3))
    head[2].weight.requires_grad_(False)
    converted = convert_split_batchnorm(copy.deepcopy(head), 2)
    assert type(converted[1]) is GlobalBatchNorm  # in one process it already sees the whole batch
    assert isinstance(converted[2], SplitBatchNorm) and not converted[2].weight.requires_grad


def test_mlp_head_with_sync_bn_builds_global_batch_norms_only():
    plain = MLPHead(out_dim=4, hidden_dim=5, layers=3, last_batch_norm=True).build(6)
    synced = build_head_from_config({"name": "mlp", "out_dim": 4, "hidden_dim": 5, "layers": 3,
                                     "last_batch_norm": True, "sync_bn": True}).build(6)
    assert [type(m).__name__ for m in plain if "BatchNorm" in type(m).__name__] == ["BatchNorm1d"] * 3
    assert [type(m) for m in synced if "BatchNorm" in type(m).__name__] == [GlobalBatchNorm] * 3
    assert plain.state_dict().keys() == synced.state_dict().keys()  # checkpoints load either way
    assert not synced[-1].affine  # the output BN stays affine-free


def build_head_from_config(node: dict) -> MLPHead:
    from selfsup.plugin_manager import default_registry

    return build(default_registry(), "head", node, "objective.projector", CONTEXT)


def test_sync_bn_must_be_a_boolean_and_the_error_names_it():
    with pytest.raises(ConfigError, match="sync_bn"):
        build_head_from_config({"name": "mlp", "out_dim": 4, "sync_bn": "maybe"})


@pytest.mark.parametrize("bundle", [BarlowTwins, VICReg])
def test_barlow_twins_and_vicreg_sync_bn_switches_their_projector(bundle):
    encoder = SmallConvNet(1, 8, width=2)
    kinds = {sync: {type(m) for m in bundle(encoder, embedding_dim=4, projector_hidden_dim=4,
                                             sync_bn=sync).projector.modules()} for sync in (False, True)}
    assert nn.BatchNorm1d in kinds[False] and GlobalBatchNorm not in kinds[False]
    assert GlobalBatchNorm in kinds[True] and nn.BatchNorm1d not in kinds[True]
