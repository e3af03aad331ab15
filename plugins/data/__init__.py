"""data: dataset factories (``dataset``) and batch-wise view augmentation (``transform``)."""

from __future__ import annotations

from selfsup.registry import Registry

from .augment import IdentityViews, MultiCropAugment, TwoViewAugment
from .datasets import arrays, digits, torchvision
from .folders import image_folder, image_shards, npy_images


def register(registry: Registry) -> None:
    registry.register("dataset", "digits", digits)
    registry.register("dataset", "arrays", arrays)
    registry.register("dataset", "torchvision", torchvision)
    registry.register("dataset", "image_folder", image_folder)
    registry.register("dataset", "image_shards", image_shards)
    registry.register("dataset", "npy_images", npy_images)
    registry.register("transform", "two_view", TwoViewAugment)
    registry.register("transform", "multi_crop", MultiCropAugment)
    registry.register("transform", "identity", IdentityViews)
