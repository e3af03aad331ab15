"""data: dataset factories (``dataset``) and batch-wise view augmentation (``transform``)."""

from __future__ import annotations

from selfsup.registry import Registry

from .augment import IdentityViews, MultiCropAugment, TwoViewAugment
from .datasets import arrays, digits, image_folder, torchvision


def register(registry: Registry) -> None:
    registry.register("dataset", "digits", digits)
    registry.register("dataset", "arrays", arrays)
    registry.register("dataset", "torchvision", torchvision)
    registry.register("dataset", "image_folder", image_folder)
    registry.register("transform", "two_view", TwoViewAugment)
    registry.register("transform", "multi_crop", MultiCropAugment)
    registry.register("transform", "identity", IdentityViews)
