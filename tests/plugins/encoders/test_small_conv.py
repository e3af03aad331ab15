"""SmallConvNet: output shapes and the pooled grid of its global vector."""

import pytest
import torch
import torch.nn.functional as F

from selfsup.plugins.encoders.conv import SmallConvNet


@pytest.mark.parametrize("image_size, side", [(8, 4), (16, 4), (28, 7), (32, 8)])
def test_global_average_pool_of_the_last_map(image_size, side):
    torch.manual_seed(0)
    net = SmallConvNet(in_channels=3, image_size=image_size, width=4).eval()
    features = net(torch.randn(2, 3, image_size, image_size))
    assert features.local.shape == (2, 32, side, side) and net.out_dim == 32
    torch.testing.assert_close(features.global_, features.local.mean(dim=(2, 3)))


def test_pooled_grid_keeps_each_cell_in_its_place():
    torch.manual_seed(0)
    net = SmallConvNet(in_channels=1, image_size=16, width=2, pool_size=2).eval()  # 4x4 maps of 16 channels
    features = net(torch.randn(3, 1, 16, 16))
    local = features.local
    assert net.out_dim == 16 * 4 and features.global_.shape == (3, 64)
    cells = features.global_.view(3, 2, 2, 16)  # [N, row, column, channel]
    torch.testing.assert_close(cells[:, 0, 1], local[:, :, :2, 2:].mean(dim=(2, 3)))  # top-right 2x2 quadrant
    torch.testing.assert_close(cells[:, 1, 0], local[:, :, 2:, :2].mean(dim=(2, 3)))  # bottom-left
    # the same under channels_last (the layout the training presets use)
    net = net.to(memory_format=torch.channels_last)
    image = torch.randn(3, 1, 16, 16).contiguous(memory_format=torch.channels_last)
    out = net(image)
    torch.testing.assert_close(out.global_, F.adaptive_avg_pool2d(out.local, 2).permute(0, 2, 3, 1).flatten(1))


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="pool_size must be >= 1"):
        SmallConvNet(pool_size=0)
    with pytest.raises(ValueError, match="pool_size 5 is larger than the 4x4 last feature map of a 8-pixel image"):
        SmallConvNet(image_size=8, pool_size=5)
