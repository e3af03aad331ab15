"""Dataset factories (registry kind ``dataset``) of arrays: digits, ``.npz`` arrays, torchvision.

Image folders, tar shards and ``.npy`` files are read by :mod:`.folders`.

Every factory is a plain function with simple typed keyword parameters (checked against
the pipeline file by :mod:`selfsup.config`) and returns a :class:`~selfsup.data.DataSplits`
whose images are uint8 ``[N, C, H, W]`` (0..255) and whose labels are int64 ``[N]``.

Nothing is ever downloaded unless a factory is explicitly asked to (``torchvision`` with
``download: true``). Data files are read without unpickling (``allow_pickle=False``).
Every problem a user can cause raises :class:`~selfsup.errors.DataError` with a one-line
message naming the file, the key and what was expected versus found.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.data import DataSplits, ImageArrays
from selfsup.errors import ConfigError, DataError, did_you_mean

Layout = Literal["auto", "NHWC", "NCHW"]
#: Channel counts an image array may have (grey, RGB, RGBA; alpha is dropped).
CHANNEL_COUNTS = (1, 3, 4)


# --------------------------------------------------------------------------- helpers
def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < float(test_fraction) < 1.0:
        raise ConfigError(f"test_fraction must be strictly between 0 and 1, got {test_fraction!r}.")


def split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/test index arrays for ``labels`` ``[N]``; stratified when every class allows it.

    Uses scikit-learn's ``train_test_split`` with ``random_state=seed``, so a split is
    reproducible. Falls back to an unstratified split when a class has a single sample or
    the test split is smaller than the number of classes.
    """
    from sklearn.model_selection import train_test_split

    _check_fraction(test_fraction)
    n = int(labels.shape[0])
    if n < 2:
        raise DataError(f"cannot split {n} sample(s) into train and test; at least 2 are needed.")
    index = np.arange(n)
    try:
        train_idx, test_idx = train_test_split(
            index, test_size=test_fraction, random_state=seed, stratify=labels
        )
    except ValueError:  # a class too small to stratify, or too few test samples
        train_idx, test_idx = train_test_split(index, test_size=test_fraction, random_state=seed)
    return np.sort(train_idx), np.sort(test_idx)


def _arrays(images: np.ndarray | Tensor, labels: np.ndarray | Tensor) -> ImageArrays:
    """uint8 ``[N, C, H, W]`` and integer ``[N]`` (numpy or torch) -> :class:`ImageArrays`."""
    x = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
    y = torch.as_tensor(np.asarray(labels) if isinstance(labels, np.ndarray) else labels)
    return ImageArrays(x.to(torch.uint8).contiguous(), y.to(torch.int64).contiguous())


def _split_arrays(
    images: np.ndarray, labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[ImageArrays, ImageArrays]:
    train_idx, test_idx = split_indices(labels, test_fraction, seed)
    return _arrays(images[train_idx], labels[train_idx]), _arrays(images[test_idx], labels[test_idx])


#: More classes than this, without class names given, is taken for labels that are not class
#: indices (ids, hashes, values) rather than a classification problem.
MAX_CLASSES = 100_000


def default_class_names(*label_arrays: np.ndarray | Tensor, where: str = "labels") -> list[str]:
    """'0'..'K-1' where K-1 is the largest label seen (labels of -1 mean unknown).

    A largest label at or above :data:`MAX_CLASSES` or above the number of samples is refused
    (a :class:`DataError` naming ``where``): such labels are not class indices.
    """
    top = max((int(np.asarray(y).max()) for y in label_arrays if np.asarray(y).size), default=-1)
    samples = sum(int(np.asarray(y).size) for y in label_arrays)
    if top >= MAX_CLASSES or top >= max(samples, 1) * 10:
        raise DataError(
            f"{where}: the largest label is {top}, for {samples} samples; labels must be class indices "
            f"0..K-1 (at most {MAX_CLASSES:,} classes). Relabel them, or give the dataset's class_names."
        )
    return [str(i) for i in range(top + 1)]


def resize_and_crop(images: Tensor, size: int, chunk: int = 1024) -> Tensor:
    """Resize the shorter side to ``size`` then centre-crop: uint8 ``[N,C,H,W]`` -> ``[N,C,size,size]``.

    Bilinear with antialiasing, done in chunks of ``chunk`` images to bound memory.
    """
    if size < 1:
        raise ConfigError(f"image_size must be a positive integer, got {size!r}.")
    n, _, h, w = images.shape
    if h == size and w == size:
        return images
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    out = []
    for start in range(0, n, chunk):
        block = images[start : start + chunk].float()
        block = F.interpolate(block, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        block = block[:, :, top : top + size, left : left + size]
        out.append(block.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out) if out else images.new_zeros((0, images.shape[1], size, size))


# --------------------------------------------------------------------------- digits
def digits(test_fraction: float = 0.2, seed: int = 0) -> DataSplits:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 grey images, 10 classes).

    Values 0..16 are scaled to 0..255 uint8, images are ``[N, 1, 8, 8]``. The train/test
    split is stratified and fixed by ``seed``. Needs no download.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    train, test = _split_arrays(images, labels, test_fraction, seed)
    return DataSplits(train, test, class_names=[str(i) for i in range(10)], source="sklearn load_digits")


# --------------------------------------------------------------------------- .npz arrays
def open_npz(path: str) -> Any:
    """``np.load(path, allow_pickle=False)`` as an npz archive, or a DataError."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(
            f"{path}: file not found (datasets are not downloaded; put an .npz file there "
            f"or set the dataset's 'path' parameter)."
        )
    if p.is_dir():
        raise DataError(f"{path}: expected an .npz file, found a directory.")
    try:
        with open(p, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
        raise DataError(
            f"{path}: not an .npz archive (a zip of named arrays written by numpy.savez); its first bytes are "
            f"{magic!r}. Save the data with numpy.savez(path, x_train=..., y_train=...)."
        )
    try:
        loaded = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{path}: not a readable .npz archive (expected a zip of named arrays written by "
            f"numpy.savez; {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})."
        ) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(
            f"{path}: expected an .npz archive of named arrays, found a single .npy array "
            f"of shape {tuple(np.shape(loaded))}; save with numpy.savez(path, x_train=..., y_train=...)."
        )
    return loaded


def _missing_key(npz: Any, path: str, key: str) -> DataError:
    present = ", ".join(repr(k) for k in npz.files) or "none"
    return DataError(f"{path}: key {key!r} not found; keys present: {present}.{did_you_mean(key, npz.files)}")


def read_key(npz: Any, path: str, key: str) -> np.ndarray:
    if key not in npz.files:
        raise _missing_key(npz, path, key)
    try:
        return npz[key]
    except (ValueError, zipfile.BadZipFile, OSError) as exc:
        raise DataError(
            f"{path}: key {key!r} could not be read without unpickling (expected a numeric "
            f"array, found {str(exc).splitlines()[0] if str(exc) else type(exc).__name__})."
        ) from None


def _choose_layout(shape: tuple[int, ...], layout: str, where: str) -> str:
    """'NHWC' or 'NCHW' for a 4-D shape, auto-detecting by the channel count when unambiguous."""
    if layout not in ("auto", "NHWC", "NCHW"):
        raise ConfigError(f"layout must be one of 'auto', 'NHWC', 'NCHW', got {layout!r}.")
    channels_last = shape[3] in CHANNEL_COUNTS
    channels_first = shape[1] in CHANNEL_COUNTS
    if layout == "NHWC" and not channels_last:
        raise DataError(
            f"{where}: layout 'NHWC' expects [N, H, W, C] with C in {CHANNEL_COUNTS}, found shape {shape}."
        )
    if layout == "NCHW" and not channels_first:
        raise DataError(
            f"{where}: layout 'NCHW' expects [N, C, H, W] with C in {CHANNEL_COUNTS}, found shape {shape}."
        )
    if layout != "auto":
        return layout
    if channels_last and channels_first:
        raise DataError(
            f"{where}: shape {shape} is ambiguous ([N, H, W, C] or [N, C, H, W]); "
            f"set the dataset's 'layout' parameter to 'NHWC' or 'NCHW'."
        )
    if not (channels_last or channels_first):
        raise DataError(
            f"{where}: expected [N, H, W, C] or [N, C, H, W] with C in {CHANNEL_COUNTS}, found shape {shape}."
        )
    return "NHWC" if channels_last else "NCHW"


def _as_uint8(array: np.ndarray, where: str) -> np.ndarray:
    """uint8 as is; other integers in 0..255; floats in [0, 1] (x255) or [0, 255]; else DataError."""
    if array.dtype == np.uint8:
        return array
    numeric = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    if array.dtype == np.bool_ or not numeric:
        raise DataError(f"{where}: expected uint8 or float images, found dtype {array.dtype}.")
    if array.size == 0:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if np.isnan(array).any():
            raise DataError(f"{where}: expected finite pixel values, found NaN.")
        if np.isinf(array).any():
            raise DataError(f"{where}: expected finite pixel values, found inf.")
    low, high = float(array.min()), float(array.max())
    if np.issubdtype(array.dtype, np.integer):
        if low < 0 or high > 255:
            raise DataError(f"{where}: expected integer pixel values in 0..255, found {low:g}..{high:g}.")
        return array.astype(np.uint8)
    if low < 0.0 or high > 255.0:
        raise DataError(
            f"{where}: expected float pixel values in [0, 1] or [0, 255], found {low:g}..{high:g}."
        )
    scale = 255.0 if high <= 1.0 else 1.0
    return np.rint(array.astype(np.float32) * scale).clip(0, 255).astype(np.uint8)


def to_nchw_uint8(array: np.ndarray, layout: str = "auto", where: str = "images") -> np.ndarray:
    """Image array ``[N,H,W]``, ``[N,H,W,C]`` or ``[N,C,H,W]`` -> uint8 ``[N, C, H, W]`` (C in 1, 3).

    RGBA (C=4) keeps its colour channels only. ``where`` prefixes error messages.
    """
    if array.ndim == 3:
        nchw = array[:, None]
    elif array.ndim == 4:
        chosen = _choose_layout(tuple(array.shape), layout, where)
        nchw = array.transpose(0, 3, 1, 2) if chosen == "NHWC" else array
    else:
        raise DataError(
            f"{where}: expected images [N, H, W], [N, H, W, C] or [N, C, H, W], "
            f"found {array.ndim}-D shape {tuple(array.shape)}."
        )
    if nchw.shape[0] == 0:
        raise DataError(f"{where}: expected at least one image, found shape {tuple(array.shape)}.")
    if nchw.shape[1] == 4:
        nchw = nchw[:, :3]
    return np.ascontiguousarray(_as_uint8(nchw, where))


def check_labels(labels: np.ndarray, num_images: int, where: str) -> np.ndarray:
    """Integer labels ``[N]`` (or ``[N, 1]``) -> int64 ``[N]``; -1 means unknown."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(
            f"{where}: expected 1-D integer labels [N] with N={num_images}, found shape {tuple(labels.shape)}."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{where}: expected integer class labels, found dtype {labels.dtype} "
            f"(convert with labels.astype('int64'))."
        )
    if labels.shape[0] != num_images:
        raise DataError(f"{where}: expected {num_images} labels (one per image), found {labels.shape[0]}.")
    if labels.size and labels.min() < -1:
        raise DataError(f"{where}: expected labels >= 0 (or -1 for unknown), found {int(labels.min())}.")
    return labels.astype(np.int64)


def _load_pair(npz: Any, path: str, images_key: str, labels_key: str, layout: str) -> tuple[np.ndarray, np.ndarray]:
    images = to_nchw_uint8(read_key(npz, path, images_key), layout, f"{path}: key {images_key!r}")
    labels = check_labels(read_key(npz, path, labels_key), images.shape[0], f"{path}: key {labels_key!r}")
    return images, labels


def _test_keys(npz: Any, path: str, images_key: str | None, labels_key: str | None) -> tuple[str, str] | None:
    """The test keys to read, or None to split the training arrays.

    Absent keys mean "split" when they are the defaults (``x_test``/``y_test``) or both None;
    a key the user named explicitly must exist.
    """
    if images_key is None or labels_key is None:
        if images_key is not None or labels_key is not None:
            raise ConfigError(
                "test_images_key and test_labels_key must both be set or both be null "
                f"(got {images_key!r} and {labels_key!r})."
            )
        return None
    present = [k in npz.files for k in (images_key, labels_key)]
    if all(present):
        return images_key, labels_key
    if not any(present) and (images_key, labels_key) == ("x_test", "y_test"):
        return None
    raise _missing_key(npz, path, labels_key if present[0] else images_key)


def arrays(
    path: str,
    images_key: str = "x_train",
    labels_key: str = "y_train",
    test_images_key: str | None = "x_test",
    test_labels_key: str | None = "y_test",
    layout: Layout = "auto",
    test_fraction: float = 0.2,
    seed: int = 0,
    class_names: list[str] | None = None,
) -> DataSplits:
    """Image and label arrays from an ``.npz`` file (bring your own data).

    Images may be ``[N, H, W]`` (grey), ``[N, H, W, C]`` or ``[N, C, H, W]`` with C in 1, 3, 4
    (``layout: auto`` detects which when unambiguous; alpha is dropped), uint8 or float in
    [0, 1] or [0, 255]. Labels are 1-D integers (``[N, 1]`` is accepted). When the test keys
    are null, or the default ``x_test``/``y_test`` are absent, the training arrays are split
    with ``test_fraction``/``seed`` (stratified when possible). Images need not be square.
    """
    with open_npz(path) as npz:
        train_images, train_labels = _load_pair(npz, path, images_key, labels_key, layout)
        keys = _test_keys(npz, path, test_images_key, test_labels_key)
        if keys is None:
            try:
                train, test = _split_arrays(train_images, train_labels, test_fraction, seed)
            except DataError as exc:  # name the file and keys the split was made from
                raise DataError(f"{path}: keys {images_key!r}/{labels_key!r} (no test keys): {exc}") from None
            source = f"{path} ({images_key}/{labels_key}, split {test_fraction:g} with seed {seed})"
        else:
            test_images, test_labels = _load_pair(npz, path, keys[0], keys[1], layout)
            if test_images.shape[1:] != train_images.shape[1:]:
                raise DataError(
                    f"{path}: key {keys[0]!r}: expected images shaped like {images_key!r} "
                    f"[N, {', '.join(map(str, train_images.shape[1:]))}] (as [N, C, H, W]), "
                    f"found [N, {', '.join(map(str, test_images.shape[1:]))}]."
                )
            train, test = _arrays(train_images, train_labels), _arrays(test_images, test_labels)
            source = f"{path} ({images_key}/{labels_key}, {keys[0]}/{keys[1]})"
    names = (list(class_names) if class_names is not None
             else default_class_names(train.labels, test.labels, where=f"{path}: labels"))
    top = int(max(train.labels.max(), test.labels.max()))
    if len(names) <= top:
        raise DataError(
            f"{path}: class_names lists {len(names)} names but labels go up to {top} "
            f"(expected at least {top + 1} names)."
        )
    return DataSplits(train, test, class_names=names, source=source)


# --------------------------------------------------------------------------- torchvision
@dataclass(frozen=True)
class _TorchvisionSpec:
    """How one torchvision dataset class is opened and where its files live."""

    layout: Literal["NHW", "NHWC", "NCHW"]
    split_arg: Literal["train", "split"]  # train=True/False, or split='train'/'test'
    files: str  # where the files are expected, relative to root


TORCHVISION_DATASETS: dict[str, _TorchvisionSpec] = {
    "MNIST": _TorchvisionSpec("NHW", "train", "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"),
    "FashionMNIST": _TorchvisionSpec(
        "NHW", "train", "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"
    ),
    "KMNIST": _TorchvisionSpec("NHW", "train", "KMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"),
    "CIFAR10": _TorchvisionSpec("NHWC", "train", "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)"),
    "CIFAR100": _TorchvisionSpec("NHWC", "train", "cifar-100-python/ (train, test, meta)"),
    "SVHN": _TorchvisionSpec("NCHW", "split", "train_32x32.mat and test_32x32.mat"),
    "STL10": _TorchvisionSpec("NCHW", "split", "stl10_binary/ (train_X.bin, train_y.bin, test_X.bin, ...)"),
}


def _canonical_torchvision_name(dataset: str) -> str:
    by_lower = {name.lower(): name for name in TORCHVISION_DATASETS}
    name = by_lower.get(dataset.lower().replace("-", "").replace("_", ""))
    if name is None:
        raise DataError(
            f"unknown torchvision dataset {dataset!r}.{did_you_mean(dataset, TORCHVISION_DATASETS)} "
            f"Supported: {', '.join(TORCHVISION_DATASETS)}."
        )
    return name


def _open_torchvision(name: str, root: str, train: bool, download: bool) -> Any:
    import torchvision.datasets as tvd

    spec = TORCHVISION_DATASETS[name]
    cls = getattr(tvd, name)
    split_kwargs = {"train": train} if spec.split_arg == "train" else {"split": "train" if train else "test"}
    try:
        return cls(root=root, download=download, **split_kwargs)
    except RuntimeError as exc:
        if not download and "not found" in str(exc).lower():
            raise DataError(
                f"torchvision {name}: files not found under {os.path.join(root, '')} "
                f"(expected {spec.files}); datasets are not downloaded unless you pass "
                f"`download: true`, or put the files there."
            ) from None
        raise DataError(f"torchvision {name} at {root}: could not be loaded ({str(exc).splitlines()[0]}).") from None
    except Exception as exc:  # network errors, corrupt archives, missing scipy ...
        what = "download failed" if download else "could not be loaded"
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise DataError(f"torchvision {name} at {root}: {what} ({type(exc).__name__}: {first}).") from None


def _torchvision_arrays(ds: Any, layout: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A torchvision dataset -> uint8 ``[N, C, H, W]`` and int64 ``[N]`` numpy arrays."""
    data = getattr(ds, "data", None)
    targets = getattr(ds, "targets", getattr(ds, "labels", None))
    if data is not None and targets is not None:
        images = data.numpy() if isinstance(data, Tensor) else np.asarray(data)
        labels = targets.numpy() if isinstance(targets, Tensor) else np.asarray(targets)
        if layout == "NHW":
            images = images[:, None]
        elif layout == "NHWC":
            images = images.transpose(0, 3, 1, 2)
        return to_nchw_uint8(images, "NCHW", where), check_labels(labels, images.shape[0], where)
    return _iterate_dataset(ds, where)


def _iterate_dataset(ds: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Fallback: decode every item (PIL image or tensor, label) of a map-style dataset."""
    images, labels = [], []
    for i in range(len(ds)):
        image, label = ds[i]
        array = np.asarray(image)
        images.append(array.transpose(2, 0, 1) if array.ndim == 3 else array[None])
        labels.append(int(label) if label is not None else -1)
    return to_nchw_uint8(np.stack(images), "NCHW", where), np.asarray(labels, dtype=np.int64)


def torchvision(
    dataset: str, root: str = "data", download: bool = False, image_size: int | None = None
) -> DataSplits:
    """A torchvision dataset (MNIST, FashionMNIST, KMNIST, CIFAR10, CIFAR100, SVHN, STL10) held in memory.

    Files are read from ``root`` in torchvision's layout; nothing is downloaded unless
    ``download`` is true. ``image_size`` resizes (shorter side) and centre-crops.
    """
    name = _canonical_torchvision_name(dataset)
    spec = TORCHVISION_DATASETS[name]
    splits = []
    for train in (True, False):
        ds = _open_torchvision(name, root, train, download)
        where = f"torchvision {name} ({'train' if train else 'test'}) at {root}"
        images, labels = _torchvision_arrays(ds, spec.layout, where)
        x = torch.from_numpy(images)
        if image_size is not None:
            x = resize_and_crop(x, image_size)
        splits.append((_arrays(x, labels), ds))
    (train_split, train_ds), (test_split, _) = splits
    classes = getattr(train_ds, "classes", None)
    names = [str(c) for c in classes] if classes else default_class_names(train_split.labels, test_split.labels)
    return DataSplits(train_split, test_split, class_names=names, source=f"torchvision {name} at {root}")


