"""A small convolutional encoder for 8x8 to 32x32 images."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from selfsup.interfaces import Encoder, Features


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallConvNet(Encoder):
    """Four 3x3 conv-BN-ReLU blocks (width w, 2w, 4w, 8w), global average pooled.

    Inputs ``[N, in_channels, S, S]`` with S from 8 to 64. The second block halves the
    resolution from 8 pixels up, the third from 16 up (8x8 -> 4x4 maps, 28x28 -> 7x7).
    Returns global ``[N, 8w]`` and the last block's local map ``[N, 8w, S', S']``.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 32, width: int = 32) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        size, blocks, c_in = image_size, [], in_channels
        for i, c_out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 2 if (i == 1 and size >= 8) or (i == 2 and size >= 16) else 1
            blocks.append(_conv_bn_relu(c_in, c_out, stride))
            size, c_in = (size + 1) // stride, c_out
        self.blocks = nn.Sequential(*blocks)
        self.out_dim = 8 * width
        self.local_channels = 8 * width

    def forward(self, x: Tensor) -> Features:
        local = self.blocks(x)  # [N, 8w, S', S']
        return Features(global_=torch.flatten(local.mean(dim=(2, 3)), 1), local=local)
