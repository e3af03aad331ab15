"""Multimodal datasets (registry kind ``dataset``): multi-view images and your own ``.npz`` modalities.

Each returns :class:`~selfsup.data.DataSplits` of :class:`~selfsup.data.MultiModalArrays`:
every sample is a mapping modality name -> float32 tokens ``[T_m, F_m]``. Modalities are
z-scored per feature with training-split statistics (``standardize``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from selfsup.data import DataSplits, ImageArrays, MultiModalArrays
from selfsup.errors import ConfigError, DataError

from ..data.datasets import default_class_names, digits, open_npz, read_key, check_labels, split_indices
from . import views
from .views import IMAGE_VIEWS, image_views

DEFAULT_MODALITIES = tuple(IMAGE_VIEWS)


def _multimodal_splits(
    train: dict[str, torch.Tensor], train_labels: torch.Tensor, test: dict[str, torch.Tensor],
    test_labels: torch.Tensor, standardize_features: bool,
) -> tuple[MultiModalArrays, MultiModalArrays]:
    if standardize_features:
        train, test = views.standardize(train, test)
    return MultiModalArrays(train, train_labels), MultiModalArrays(test, test_labels)


# --------------------------------------------------------------------------- views of images
def _check_views(modalities: list[str] | None) -> list[str]:
    chosen = list(modalities) if modalities is not None else list(DEFAULT_MODALITIES)
    unknown = [m for m in chosen if m not in IMAGE_VIEWS]
    if not chosen or unknown or len(set(chosen)) != len(chosen):
        raise ConfigError(
            f"modalities: expected a non-empty list of distinct views from {', '.join(IMAGE_VIEWS)}, got {chosen}."
        )
    return chosen


def views_of_images(images: DataSplits, modalities: list[str] | None = None, patch_size: int | None = None,
                    standardize: bool = True) -> DataSplits:
    """Turn image splits ``[N, C, H, W]`` into multi-view splits (see :func:`multiview`)."""
    chosen = _check_views(modalities)
    if not isinstance(images, DataSplits) or not isinstance(images.train, ImageArrays):
        raise DataError("data.dataset.source: multiview needs an image dataset (digits, arrays, torchvision, ...).")
    side = min(images.train.images.shape[-2:])
    patch = patch_size if patch_size is not None else max(1, side // 4)
    if not 1 <= patch <= side:
        raise ConfigError(f"patch_size: must be between 1 and the image side {side}, got {patch}.")
    train, test = _multimodal_splits(
        image_views(images.train.images, chosen, patch), images.train.labels,
        image_views(images.test.images, chosen, patch), images.test.labels, standardize,
    )
    return DataSplits(train, test, class_names=list(images.class_names),
                      source=f"multiview({', '.join(chosen)}; patch {patch}) of {images.source}")


def multiview(
    source: dict[str, Any] | None = None,
    modalities: list[str] | None = None,
    patch_size: int | None = None,
    standardize: bool = True,
) -> DataSplits:
    """Multi-view data from any image dataset: patches, row profiles, column profiles, |FFT| spectrum.

    source: the image dataset node, e.g. ``{name: arrays, path: data.npz}`` (default
        ``{name: digits}``), built from the installed plugins; its train/test split is kept.
    modalities: which views, a subset of patches, rows, columns, spectrum (default: all).
    patch_size: side of the square patches (default: a quarter of the image side, >= 1).
    standardize: z-score each feature with training-split statistics.
    """
    from selfsup.config import build
    from selfsup.plugin_manager import default_registry

    _check_views(modalities)
    images = build(default_registry(), "dataset", source or {"name": "digits"}, "data.dataset.source")
    return views_of_images(images, modalities, patch_size, standardize)


def multiview_digits(
    modalities: list[str] | None = None, patch_size: int = 2, test_fraction: float = 0.2, seed: int = 0,
    standardize: bool = True,
) -> DataSplits:
    """scikit-learn's digits as four views: 2x2 patches (16x4), rows (8x8), columns (8x8), |FFT| (8x5)."""
    _check_views(modalities)
    return views_of_images(digits(test_fraction, seed), modalities, patch_size, standardize)


# --------------------------------------------------------------------------- your own arrays
def _read_modality(npz: Any, path: str, key: str, n: int | None) -> torch.Tensor:
    array = read_key(npz, path, key)
    where = f"{path}: key {key!r}"
    if array.ndim == 2:
        array = array[:, None, :]  # a feature vector is one token
    if array.ndim != 3:
        raise DataError(f"{where}: expected a modality [N, T, F] (or [N, F]), found shape {tuple(array.shape)}.")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise DataError(f"{where}: expected numeric values, found dtype {array.dtype}.")
    if n is not None and array.shape[0] != n:
        raise DataError(f"{where}: expected {n} samples like the other modalities, found {array.shape[0]}.")
    values = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if not bool(torch.isfinite(values).all()):
        raise DataError(f"{where}: expected finite values, found NaN or inf.")
    return values


def _read_split(npz: Any, path: str, names: list[str], keys: list[str], labels_key: str):
    labels = read_key(npz, path, labels_key)
    tokens: dict[str, torch.Tensor] = {}
    for name, key in zip(names, keys):
        tokens[name] = _read_modality(npz, path, key, labels.shape[0] if labels.ndim >= 1 else None)
    n = next(iter(tokens.values())).shape[0]
    return tokens, torch.from_numpy(check_labels(labels, n, f"{path}: key {labels_key!r}"))


def multimodal_arrays(
    path: str,
    modalities: list[str],
    labels_key: str = "y_train",
    test_modalities: list[str] | None = None,
    test_labels_key: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
    class_names: list[str] | None = None,
) -> DataSplits:
    """Several modalities from one ``.npz``: one key per modality (bring your own multimodal data).

    modalities: the keys of the training arrays, one per modality; each key also names its
        modality. An array is ``[N, T, F]`` (T tokens of F features) or ``[N, F]`` (one token).
    test_modalities / test_labels_key: the test keys, in the same order as ``modalities``;
        when both are null the training arrays are split with ``test_fraction``/``seed``
        (stratified when possible).
    """
    if not modalities or len(set(modalities)) != len(modalities):
        raise ConfigError(f"modalities: expected a non-empty list of distinct .npz keys, got {modalities!r}.")
    if (test_modalities is None) != (test_labels_key is None):
        raise ConfigError("test_modalities and test_labels_key must both be set or both be null.")
    if test_modalities is not None and len(test_modalities) != len(modalities):
        raise ConfigError(
            f"test_modalities: expected {len(modalities)} keys (one per modality, same order), got {test_modalities!r}."
        )
    with open_npz(path) as npz:
        train, train_labels = _read_split(npz, path, modalities, modalities, labels_key)
        if test_modalities is None:
            train_idx, test_idx = (torch.from_numpy(i) for i in split_indices(train_labels.numpy(), test_fraction, seed))
            test = {m: x[test_idx] for m, x in train.items()}
            train = {m: x[train_idx] for m, x in train.items()}
            test_labels, train_labels = train_labels[test_idx], train_labels[train_idx]
            source = f"{path} ({', '.join(modalities)}; split {test_fraction:g} with seed {seed})"
        else:
            test, test_labels = _read_split(npz, path, modalities, test_modalities, test_labels_key)
            for name, key in zip(modalities, test_modalities):
                if test[name].shape[1:] != train[name].shape[1:]:
                    raise DataError(
                        f"{path}: key {key!r}: expected tokens shaped like {name!r} {list(train[name].shape[1:])}, "
                        f"found {list(test[name].shape[1:])}."
                    )
            source = f"{path} ({', '.join(modalities)}; test {', '.join(test_modalities)})"
    train_split, test_split = _multimodal_splits(train, train_labels, test, test_labels, standardize)
    names = list(class_names) if class_names is not None else default_class_names(train_labels, test_labels)
    top = int(max(train_labels.max(), test_labels.max()))
    if len(names) <= top:
        raise DataError(f"{path}: class_names lists {len(names)} names but labels go up to {top}.")
    return DataSplits(train_split, test_split, class_names=names, source=source)
