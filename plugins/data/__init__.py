"""data: dataset factories (``dataset``) and batch-wise view augmentation (``transform``)."""

from __future__ import annotations

from selfsup.registry import Registry

from . import augment, datasets


def register(registry: Registry) -> None:
    """Register the datasets (digits, arrays, torchvision, image_folder) and transforms (two_view, identity)."""
    datasets.register(registry)
    augment.register(registry)
