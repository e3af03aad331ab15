"""SplitBatchNorm equals a separate batch norm per chunk of the batch (training mode)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from selfsup.plugins.common.split_batchnorm import SplitBatchNorm, convert_split_batchnorm
from selfsup.plugins.encoders.conv import SmallConvNet


@pytest.mark.parametrize("shape, bn_class", [((12, 5, 3, 3), nn.BatchNorm2d), ((12, 5), nn.BatchNorm1d)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_split_batchnorm_equals_one_batchnorm_per_chunk(shape, bn_class, momentum):
    torch.manual_seed(0)
    reference = bn_class(5, momentum=momentum)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-0.5, 0.5)
    split = convert_split_batchnorm(copy.deepcopy(reference), 3)
    assert isinstance(split, SplitBatchNorm) and split.num_splits == 3
    chunks = [copy.deepcopy(reference) for _ in range(3)]
    for _ in range(2):  # two steps, so the running statistics compound
        x = torch.randn(shape) * 2 + 1
        x_split, x_ref = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        out = split(x_split)
        expected = torch.cat([bn(part) for bn, part in zip(chunks, x_ref.chunk(3))])
        torch.testing.assert_close(out, expected)
        weights = torch.randn_like(out)
        (out * weights).sum().backward()
        (expected * weights).sum().backward()
        torch.testing.assert_close(x_split.grad, x_ref.grad)
    torch.testing.assert_close(split.weight.grad, sum(bn.weight.grad for bn in chunks))
    torch.testing.assert_close(split.running_mean, torch.stack([bn.running_mean for bn in chunks]).mean(0))
    torch.testing.assert_close(split.running_var, torch.stack([bn.running_var for bn in chunks]).mean(0))
    assert int(split.num_batches_tracked) == 2


def test_eval_mode_is_a_plain_batchnorm_with_running_statistics():
    split = SplitBatchNorm(4, num_splits=2)
    split(torch.randn(8, 4, 2, 2) * 3)
    plain = nn.BatchNorm2d(4)
    plain.load_state_dict(split.state_dict())
    split.eval(), plain.eval()
    x = torch.randn(5, 4, 2, 2)  # any batch size in eval mode
    torch.testing.assert_close(split(x), plain(x))


def test_batch_must_split_evenly_and_splits_be_positive():
    with pytest.raises(ValueError, match="does not split into 3 equal chunks"):
        SplitBatchNorm(2, 3)(torch.randn(8, 2))
    with pytest.raises(ValueError, match="num_splits"):
        SplitBatchNorm(2, 0)


def test_convert_keeps_weights_and_state_dict_keys():
    encoder = SmallConvNet(in_channels=1, image_size=8, width=4)
    state = copy.deepcopy(encoder.state_dict())
    converted = convert_split_batchnorm(encoder, 2)
    splits = [m for m in converted.modules() if isinstance(m, SplitBatchNorm)]
    assert len(splits) == 4 and not any(type(m) is nn.BatchNorm2d for m in converted.modules())
    assert converted.state_dict().keys() == state.keys()
    for key, value in converted.state_dict().items():
        assert torch.equal(value, state[key])
    assert convert_split_batchnorm(SmallConvNet(1, 8, 4), 1).blocks[0][1].__class__ is nn.BatchNorm2d
