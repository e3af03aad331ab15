"""Dataset factories that read files: image folders, WebDataset tar shards, ``.npy`` arrays.

They return streamed splits (:class:`~selfsup.data.StreamedImages`): nothing is decoded here.
The engine decodes them into memory once (through the decode cache) or streams them with
DataLoader workers, per ``data.loader``. Unlabelled data (a folder of images without class
sub-folders, shards without ``.cls``, an ``.npy`` without labels) has no test split: a run
evaluates on ``eval.data`` or skips evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch

from selfsup.data import DataSplits, StreamedImages
from selfsup.errors import ConfigError, DataError

from .datasets import split_indices
from .sources import IMAGE_EXTENSIONS, ImageFiles, NpyImages, TarShards, index_shard


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _directory(root: str, what: str) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"{root}: image folder not found (expected a directory of {what}).")
    if not path.is_dir():
        raise DataError(f"{root}: expected a directory of {what}, found a file.")
    return path


def _scan(root: str, labels: str, classes: list[str] | None = None) -> tuple[list[str], list[int], list[str]]:
    """Files (relative, sorted), labels (-1: none) and class names of an image folder."""
    path = _directory(root, "images (flat) or of class sub-folders of images")
    top_images = [p for p in path.iterdir() if _is_image(p)]
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    by_class = labels == "folders" or (labels == "auto" and class_dirs and not top_images)
    if by_class:
        names = classes if classes is not None else [d.name for d in class_dirs]
        unknown = [d.name for d in class_dirs if d.name not in names]
        if unknown:
            raise DataError(f"{root}: class folders {unknown} are not among the training classes {names}.")
        files, targets = [], []
        for d in class_dirs:
            found = sorted(str(p.relative_to(path)) for p in d.rglob("*") if _is_image(p))
            files += found
            targets += [names.index(d.name)] * len(found)
        what = "class sub-folders holding image files"
    else:
        files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if _is_image(p))
        targets, names = [-1] * len(files), []
        what = "image files"
    if not files:
        raise DataError(f"{root}: no images found (expected {what}: {', '.join(IMAGE_EXTENSIONS)}).")
    return files, targets, names


def _split(train: StreamedImages, test_fraction: float, seed: int,
           where: str) -> tuple[StreamedImages, StreamedImages | None]:
    """A stratified held-out split of a labelled streamed split; unlabelled or 0: no split."""
    if test_fraction == 0 or not bool((train.labels >= 0).all()):
        return train, None
    try:
        train_idx, test_idx = split_indices(train.labels.numpy(), test_fraction, seed)
    except DataError as exc:
        raise DataError(f"{where}: {exc} (test_fraction: 0 keeps every image for training)") from None
    return train.subset(train_idx), train.subset(test_idx)


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1) (0: no held-out split), got {test_fraction!r}.")


def image_folder(
    root: str, image_size: int = 32, channels: int = 3, labels: Literal["auto", "folders", "none"] = "auto",
    test_fraction: float = 0.2, seed: int = 0, test_root: str | None = None,
) -> DataSplits:
    """Your own images: ``root/<class>/<image>`` (labelled) or images anywhere under ``root``
    (unlabelled: ``labels: none``, or ``auto`` when root holds images itself or no sub-folders).

    Images are decoded to ``channels`` (3 RGB, 1 grey), shorter side resized to ``image_size``
    and centre-cropped, by the engine (in memory once, or streamed; ``data.loader``). Labelled
    data is split into train/test by ``test_root`` (same class names) or a stratified
    ``test_fraction`` (0: no test split) fixed by ``seed``; unlabelled data has no test split.
    """
    _check_fraction(test_fraction)
    files, targets, names = _scan(root, labels)
    source = ImageFiles(Path(root).expanduser(), files, image_size, channels)
    whole = StreamedImages.of(source, torch.tensor(targets, dtype=torch.int64), files)
    if test_root is not None:
        if not names:
            raise ConfigError(f"test_root: {root} has no class sub-folders, so there are no labels to test against.")
        test_files, test_targets, _ = _scan(test_root, "folders", classes=names)
        test_source = ImageFiles(Path(test_root).expanduser(), test_files, image_size, channels)
        test = StreamedImages.of(test_source, torch.tensor(test_targets, dtype=torch.int64), test_files)
        return DataSplits(whole, test, class_names=names, source=f"image folders {root} (train), {test_root} (test)")
    train, test = _split(whole, test_fraction, seed, root)
    kind = f"{len(names)} classes" if names else "unlabelled"
    return DataSplits(train, test, class_names=names, source=f"image folder {root} ({len(files):,} images, {kind})")


def expand_shards(urls: str | list[str]) -> list[Path]:
    """Shard paths from a path, a brace pattern (``shards-{000..009}.tar``), a glob, or a list."""
    import glob

    from braceexpand import braceexpand

    patterns = [urls] if isinstance(urls, str) else list(urls)
    found: list[Path] = []
    for pattern in patterns:
        for name in braceexpand(str(pattern)):
            name = str(Path(name).expanduser())
            matches = sorted(glob.glob(name)) if any(c in name for c in "*?[") else [name]
            if not matches:
                raise DataError(f"{name}: no shard matches this pattern.")
            for match in matches:
                if not Path(match).is_file():
                    raise DataError(f"{match}: shard not found (expected a .tar file).")
                found.append(Path(match))
    if not found:
        raise DataError(f"{urls!r}: no shards given.")
    return found


def _shards_split(urls: str | list[str], image_size: int, channels: int) -> StreamedImages:
    shards = expand_shards(urls)
    index, keys, targets = [], [], []
    for number, shard in enumerate(shards):
        members, shard_keys, shard_labels = index_shard(shard)
        index += [(number, offset, size) for offset, size in members]
        keys += shard_keys
        targets += shard_labels
    source = TarShards(shards, index, keys, image_size, channels)
    names = [f"{shards[i].name}/{k}" for (i, _, _), k in zip(index, keys)]
    return StreamedImages.of(source, torch.tensor(targets, dtype=torch.int64), names)


def image_shards(
    urls: str | list[str], image_size: int = 32, channels: int = 3, test_fraction: float = 0.0, seed: int = 0,
    test_urls: str | list[str] | None = None,
) -> DataSplits:
    """WebDataset-style ``.tar`` shards (``<key>.jpg``/``.png``..., optional ``<key>.cls``).

    ``urls``: a path, a brace pattern (``data/train-{000..099}.tar``), a glob or a list. A
    labelled set (every sample has ``.cls``) is held out by ``test_urls`` or a stratified
    ``test_fraction`` (default 0: none); decoding as :func:`image_folder`.
    """
    _check_fraction(test_fraction)
    whole = _shards_split(urls, image_size, channels)
    labelled = bool((whole.labels >= 0).all())
    top = int(whole.labels.max())
    if test_urls is not None:
        test = _shards_split(test_urls, image_size, channels)
        top = max(top, int(test.labels.max()))
        train: StreamedImages = whole
    else:
        train, test = _split(whole, test_fraction, seed, str(urls))
    names = [str(i) for i in range(top + 1)] if labelled else []
    return DataSplits(train, test, class_names=names, source=f"tar shards {urls} ({len(whole):,} samples)")


def npy_images(
    path: str, labels: str | None = None, layout: Literal["auto", "NHWC", "NCHW"] = "auto",
    test_fraction: float = 0.0, seed: int = 0,
) -> DataSplits:
    """A uint8 image array in an ``.npy`` file, memory-mapped (only the rows read are paged in).

    Shapes ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]`` (``layout``); ``labels``: an
    ``.npy`` of N integer labels (none: unlabelled); ``test_fraction`` holds out a stratified
    test split of labelled data (default 0: none).
    """
    from .datasets import _choose_layout, check_labels

    _check_fraction(test_fraction)
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{path}: .npy file not found.")
    try:
        array = np.load(file, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0] if str(exc) else exc}).") from None
    if array.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 images, found dtype {array.dtype} (convert with .astype('uint8')).")
    if array.ndim not in (3, 4) or array.shape[0] == 0:
        raise DataError(f"{path}: expected images [N, H, W], [N, H, W, C] or [N, C, H, W], found shape {array.shape}.")
    channels_last = array.ndim == 4 and _choose_layout(tuple(array.shape), layout, path) == "NHWC"
    source = NpyImages(file, tuple(array.shape), channels_last)
    targets = None
    if labels is not None:
        where = f"{labels} (labels of {path})"
        try:
            raw = np.load(Path(labels).expanduser(), allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"{where}: not a readable .npy array ({exc}).") from None
        targets = torch.from_numpy(check_labels(np.asarray(raw), len(source), where))
    train, test = _split(StreamedImages.of(source, targets), test_fraction, seed, path)
    top = int(train.labels.max())
    names = [str(i) for i in range(top + 1)] if top >= 0 else []
    return DataSplits(train, test, class_names=names, source=f"{path} ({len(source):,} images)")
