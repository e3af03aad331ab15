"""A small convolutional encoder for 8x8 to 32x32 images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.interfaces import Encoder, Features


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallConvNet(Encoder):
    """Four 3x3 conv-BN-ReLU blocks (width w, 2w, 4w, 8w), average pooled.

    Inputs ``[N, in_channels, S, S]`` with S from 8 to 64. The second block halves the
    resolution of images from 8 pixels up, the third of images from 16 up (8x8 -> 4x4 maps,
    16x16 -> 4x4, 28x28 -> 7x7, 32x32 -> 8x8).
    Returns the last block's local map ``[N, 8w, S', S']`` and a global vector
    ``[N, 8w * P^2]``: the map average-pooled to ``P x P`` cells (``pool_size``; 1 = global
    average pooling), channels of the cell at row i, column j at ``(i * P + j) * 8w``. A
    pooled grid keeps where on the image a feature fired, which tells apart small images
    of one silhouette that differ in one place (a shirt's collar, a sleeve's length).

    Any input size reads (the strides are fixed by ``image_size``; a multi-crop local crop
    gives a smaller map and the same ``[N, out_dim]`` vector), as long as the last map has
    at least ``pool_size`` cells per side: a smaller one raises a ValueError.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 32, width: int = 32, pool_size: int = 1) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1 (cells per side of the pooled grid), got {pool_size}")
        size, blocks, c_in = image_size, [], in_channels
        for i, c_out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 2 if (i == 1 and image_size >= 8) or (i == 2 and image_size >= 16) else 1
            blocks.append(_conv_bn_relu(c_in, c_out, stride))
            size, c_in = (size - 1) // stride + 1, c_out  # 3x3 conv, padding 1
        if pool_size > size:
            raise ValueError(f"pool_size {pool_size} is larger than the {size}x{size} last feature map "
                             f"of a {image_size}-pixel image")
        self.blocks = nn.Sequential(*blocks)
        self.pool_size = int(pool_size)
        self.out_dim = 8 * width * self.pool_size**2
        self.local_channels = 8 * width

    def forward(self, x: Tensor) -> Features:
        local = self.blocks(x)  # [N, 8w, S', S']
        if self.pool_size > min(local.shape[-2:]):
            raise ValueError(f"pool_size {self.pool_size} is larger than the {local.shape[-2]}x{local.shape[-1]} "
                             f"last feature map of a {x.shape[-2]}x{x.shape[-1]} input; use a smaller pool_size "
                             "or larger inputs")
        if self.pool_size == 1:
            pooled = local.mean(dim=(2, 3))  # [N, 8w]
        else:  # [N, 8w, P, P] -> [N, P, P, 8w] -> [N, P * P * 8w]
            pooled = F.adaptive_avg_pool2d(local, self.pool_size).permute(0, 2, 3, 1)
        return Features(global_=torch.flatten(pooled, 1), local=local)
