"""Encoders: a small conv net, torchvision ResNets, any timm model."""

from __future__ import annotations

from selfsup.registry import Registry

from .backbones import TimmEncoder, TorchvisionResNet
from .conv import SmallConvNet


def register(registry: Registry) -> None:
    registry.register("encoder", "small_conv", SmallConvNet)
    registry.register("encoder", "resnet", TorchvisionResNet)
    registry.register("encoder", "timm", TimmEncoder)
