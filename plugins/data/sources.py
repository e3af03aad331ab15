"""Image sources read one sample at a time: image files, WebDataset tar shards, ``.npy`` arrays.

Each is a :class:`~selfsup.data.ImageSource`: ``read(i)`` -> uint8 ``[C, S, S]``, small enough
to hand to DataLoader worker processes (files are opened lazily, per process). Decoding is
PIL's: the image becomes RGB (``channels: 3``) or grey (``1``), its shorter side is resized to
``image_size`` and the centre cropped (``ImageOps.fit``); JPEGs are decoded at a reduced scale
when they are much larger than that (``Image.draft``), which is what makes big photos cheap.

Tar shards follow WebDataset's convention: the members of one sample share a key (the path
up to the first dot of the file name) and differ by extension; the image is the first of
``jpg``/``jpeg``/``png``/``webp``/``ppm``/``bmp``/``tif``/``tiff`` and the label, if any, the
``cls`` member (an integer as text). Shards are indexed once (member offsets) and read by
offset, so any sample can be read in any order: the run's order, resume and the distributed
shards are exact, as for the other sources (the ``webdataset`` package's iterable pipelines
shuffle by shard and buffer instead).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import numpy as np

from selfsup.data import ImageSource
from selfsup.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
#: Version of the decoding below: part of every cache key, so a change re-decodes.
DECODER = "pil-fit-bilinear-1"


def decode_image(file: str | Path | io.BytesIO, image_size: int, channels: int) -> np.ndarray:
    """An encoded image -> uint8 ``[channels, image_size, image_size]`` (shorter side resized, centre crop)."""
    from PIL import Image, ImageOps

    with Image.open(file) as image:
        if image.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale when that is still large enough
            image.draft("RGB" if channels == 3 else "L", (image_size, image_size))
        image = image.convert("RGB" if channels == 3 else "L")
        image = ImageOps.fit(image, (image_size, image_size), method=Image.Resampling.BILINEAR)
        array = np.array(image, dtype=np.uint8)  # a writable copy
    return array.transpose(2, 0, 1) if array.ndim == 3 else array[None]


def _stat(path: Path) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); was it moved or deleted after the "
                        "folder was listed?") from None


def _check_decode_settings(image_size: int, channels: int) -> None:
    from selfsup.errors import ConfigError

    if not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}.")
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}.")


class ImageFiles(ImageSource):
    """Image files under ``root`` (``files``: paths relative to it), decoded with :func:`decode_image`."""

    def __init__(self, root: str | Path, files: list[str], image_size: int, channels: int = 3):
        _check_decode_settings(image_size, channels)
        self.root = Path(root)
        self.files = list(files)
        self.size = image_size
        self.channels = channels

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, i: int) -> np.ndarray:
        return decode_image(self.root / self.files[i], self.size, self.channels)

    def describe(self, i: int) -> str:
        return str(self.root / self.files[i])

    def fingerprint(self) -> str:
        digest = hashlib.sha1(f"{DECODER}|{self.size}|{self.channels}|{self.root.resolve()}".encode())
        for name in self.files:
            stat = _stat(self.root / name)
            digest.update(f"|{name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        return digest.hexdigest()


class NpyImages(ImageSource):
    """Rows of a uint8 ``.npy`` array ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]``,
    opened memory-mapped (only the rows read are paged in)."""

    def __init__(self, path: str | Path, shape: tuple[int, ...], channels_last: bool):
        self.path = Path(path)
        self.shape = tuple(shape)
        self.channels_last = channels_last
        self._array: np.ndarray | None = None
        self._pid = -1

    @property
    def image_shape(self) -> tuple[int, int, int]:
        if len(self.shape) == 3:
            return (1, self.shape[1], self.shape[2])
        n, a, b, c = self.shape
        return (c, a, b) if self.channels_last else (a, b, c)

    def __len__(self) -> int:
        return self.shape[0]

    def _open(self) -> np.ndarray:
        if self._array is None or self._pid != os.getpid():
            self._array, self._pid = np.load(self.path, mmap_mode="r"), os.getpid()
        return self._array

    def read(self, i: int) -> np.ndarray:
        return self.read_rows(np.asarray([i]))[0]

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` as uint8 ``[len(rows), C, H, W]`` in one slice."""
        block = np.asarray(self._open()[np.sort(rows)] if len(rows) > 1 else self._open()[rows])
        if len(rows) > 1:  # back to the order asked for
            block = block[np.argsort(np.argsort(rows))]
        if block.ndim == 3:
            return block[:, None]
        return block.transpose(0, 3, 1, 2) if self.channels_last else block

    def describe(self, i: int) -> str:
        return f"{self.path}: row {i}"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None, "_pid": -1}


class TarShards(ImageSource):
    """Samples of WebDataset-style tar shards, read by offset (see the module docstring).

    index: per sample ``(shard number, byte offset, size)`` of its image member.
    """

    def __init__(self, shards: list[Path], index: list[tuple[int, int, int]], keys: list[str], image_size: int,
                 channels: int = 3):
        _check_decode_settings(image_size, channels)
        self.shards = [Path(s) for s in shards]
        self.index = index
        self.keys = keys
        self.size = image_size
        self.channels = channels
        self._files: dict[int, io.BufferedReader] = {}
        self._pid = -1

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    def __len__(self) -> int:
        return len(self.index)

    def read(self, i: int) -> np.ndarray:
        if self._pid != os.getpid():  # a worker process opens its own handles
            self._files, self._pid = {}, os.getpid()
        shard, offset, size = self.index[i]
        if shard not in self._files:
            self._files[shard] = open(self.shards[shard], "rb")  # noqa: SIM115 - kept open for the run
        handle = self._files[shard]
        handle.seek(offset)
        return decode_image(io.BytesIO(handle.read(size)), self.size, self.channels)

    def describe(self, i: int) -> str:
        return f"{self.shards[self.index[i][0]]}: sample {self.keys[i]!r}"

    def fingerprint(self) -> str:
        digest = hashlib.sha1(f"{DECODER}|{self.size}|{self.channels}".encode())
        for shard in self.shards:
            stat = _stat(shard)
            digest.update(f"|{shard.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        return digest.hexdigest()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": {}, "_pid": -1}


def index_shard(path: Path) -> tuple[list[tuple[int, int]], list[str], list[int]]:
    """One tar shard -> per sample (offset, size) of its image, its key, and its label (-1: none).

    A sample without an image member is left out; a shard that is not a tar archive, or
    holds no image, is a :class:`DataError` naming it.
    """
    samples: dict[str, dict[str, tuple[int, int] | int]] = {}
    order: list[str] = []
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                directory, _, base = member.name.rpartition("/")
                stem, dot, extension = base.partition(".")
                if not dot or stem.startswith("."):
                    continue
                key = f"{directory}/{stem}" if directory else stem
                if key not in samples:
                    samples[key] = {}
                    order.append(key)
                extension = extension.lower()
                if extension == "cls":
                    text = tar.extractfile(member).read().decode("utf-8", "replace").strip()
                    try:
                        samples[key]["cls"] = int(text)
                    except ValueError:
                        raise DataError(f"{path}: member {member.name!r} should hold an integer class label, "
                                        f"found {text[:40]!r}.") from None
                elif f".{extension}" in IMAGE_EXTENSIONS and "image" not in samples[key]:
                    samples[key]["image"] = (member.offset_data, member.size)
    except tarfile.ReadError as exc:
        raise DataError(f"{path}: not a tar archive ({exc}); image_shards reads uncompressed WebDataset-style "
                        ".tar shards (members <key>.jpg/.png and optionally <key>.cls).") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    kept = [k for k in order if "image" in samples[k]]
    if not kept:
        raise DataError(f"{path}: no images in this shard (expected members named <key>.jpg, <key>.png, ... as "
                        "WebDataset writes them).")
    return ([samples[k]["image"] for k in kept], kept,  # type: ignore[misc]
            [int(samples[k].get("cls", -1)) for k in kept])
