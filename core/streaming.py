"""Reading a :class:`~selfsup.data.StreamedImages` split with DataLoader workers.

:class:`SampleReader` is the map-style dataset the workers index (by position in the split);
:func:`collate_samples` stacks what they read into a :class:`DecodedBatch` (uint8
``[B, C, S, S]``, the positions read, the samples skipped or failed). On top of them:
:func:`iter_batches` reads a split in order (feature extraction), :func:`decode_split`
decodes a whole split into memory, through a cache of memory-mapped ``.npy`` files keyed by
the source's fingerprint so the second run starts in seconds. The training loader
(:class:`selfsup.engine.loader.StreamingBatches`) shuffles with the same reader.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .data import ImageArrays, StreamedImages
from .errors import DataError

#: How many following samples ``on_bad_image: skip`` tries before giving up on a batch slot.
MAX_REPLACEMENTS = 64
#: How many unreadable samples a log line or an error lists by name.
LISTED = 5


@dataclass
class Sample:
    """What a worker returns for one position: the image (None when unreadable), the position
    actually read (a replacement's, under skip), and descriptions of unreadable samples."""

    image: np.ndarray | None
    position: int
    skipped: list[str] = field(default_factory=list)
    failure: str | None = None


class SampleReader(torch.utils.data.Dataset):
    """Position p of a split -> :class:`Sample` of source row ``rows[p]``, decoded.

    replace: under ``on_bad_image: skip``, read the next positions (wrapping) in place of an
    unreadable one, up to :data:`MAX_REPLACEMENTS`; otherwise report it as a failure.
    """

    def __init__(self, source, rows: Tensor, on_bad_image: str = "fail", replace: bool = True):
        self.source = source
        self.rows = rows.tolist()
        self.replace = replace and on_bad_image == "skip"

    def __len__(self) -> int:
        return len(self.rows)

    def _describe(self, position: int, exc: Exception) -> str:
        return f"{self.source.describe(self.rows[position])} ({type(exc).__name__}: {exc})"

    def __getitem__(self, position: int) -> Sample:
        skipped: list[str] = []
        tries = MAX_REPLACEMENTS if self.replace else 1
        for attempt in range(tries):
            p = (position + attempt) % len(self.rows)
            try:
                return Sample(np.ascontiguousarray(self.source.read(self.rows[p])), p, skipped)
            except Exception as exc:  # noqa: BLE001 - decoders raise many types for one bad file
                skipped.append(self._describe(p, exc))
        failure = skipped.pop() if not self.replace else (
            f"no readable image among the {tries} samples from {self.source.describe(self.rows[position])} on")
        return Sample(None, position, skipped, failure)


@dataclass
class DecodedBatch:
    """A batch read by the workers: ``images`` uint8 ``[B, C, S, S]`` (zeros where a sample
    failed), ``index`` ``[B]`` the positions read, and what was skipped or failed."""

    images: Tensor
    index: Tensor
    ok: Tensor
    skipped: list[str]
    failures: list[str]

    def pin_memory(self) -> "DecodedBatch":  # called by DataLoader(pin_memory=True)
        self.images = self.images.pin_memory()
        return self

    def raise_failure(self) -> None:
        """A :class:`DataError` naming the unreadable file(s), if any sample failed."""
        if self.failures:
            listed = "; ".join(self.failures[:LISTED])
            raise DataError(
                f"{listed}: could not be read as an image. Remove or replace the file, or set "
                "data.on_bad_image: skip to leave unreadable images out (they are counted and the first "
                "few named in the log)."
            )


def collate_samples(samples: list[Sample], shape: tuple[int, int, int]) -> DecodedBatch:
    """Stack workers' :class:`Sample` s of images ``shape`` (C, S, S) into a :class:`DecodedBatch`."""
    images = np.zeros((len(samples), *shape), dtype=np.uint8)
    for row, sample in enumerate(samples):
        if sample.image is not None:
            if sample.image.shape != tuple(shape):
                raise DataError(f"sample {sample.position}: decoded to shape {sample.image.shape}, expected {shape}")
            images[row] = sample.image
    return DecodedBatch(
        torch.from_numpy(images),
        torch.tensor([s.position for s in samples], dtype=torch.int64),
        torch.tensor([s.image is not None for s in samples]),
        [d for s in samples for d in s.skipped],
        [s.failure for s in samples if s.failure is not None],
    )


def _loader(split: StreamedImages, batch_size: int, workers: int, replace: bool) -> torch.utils.data.DataLoader:
    reader = SampleReader(split.source, split.rows, split.on_bad_image, replace=replace)
    return torch.utils.data.DataLoader(reader, batch_size=batch_size, shuffle=False, num_workers=workers,
                                       collate_fn=functools.partial(collate_samples, shape=split.image_shape))


def iter_batches(split: StreamedImages, batch_size: int, workers: int = 0) -> Iterator[Tensor]:
    """The split's images in order, uint8 ``[B, C, S, S]`` per batch (an unreadable one is
    replaced under ``on_bad_image: skip``, else a :class:`DataError` names it)."""
    for batch in _loader(split, batch_size, workers, replace=True):
        batch.raise_failure()
        yield batch.images


# --------------------------------------------------------------------------- decoding into memory
def default_cache_dir() -> Path:
    """``$SELFSUP_CACHE``, else ``$XDG_CACHE_HOME/selfsup`` (``~/.cache/selfsup``), ``/decoded``."""
    if os.environ.get("SELFSUP_CACHE"):
        return Path(os.environ["SELFSUP_CACHE"]).expanduser() / "decoded"
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "selfsup" / "decoded"


def _cache_key(split: StreamedImages) -> str | None:
    fingerprint = split.source.fingerprint()
    if fingerprint is None:
        return None
    digest = hashlib.sha1(fingerprint.encode())
    digest.update(split.rows.numpy().astype(np.int64).tobytes())
    return digest.hexdigest()[:24]


def _load_cached(images_path: Path, meta_path: Path, split: StreamedImages) -> tuple[ImageArrays, list[str]] | None:
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(images_path, mmap_mode="c")  # copy-on-write: pages come from the file as read
    except (OSError, ValueError):
        return None
    if images.shape != (len(split), *split.image_shape):
        return None
    return _keep(split, torch.from_numpy(images), meta["bad_positions"], meta["bad"]), meta["bad"]


def _keep(split: StreamedImages, images: Tensor, bad_positions: list[int], bad: list[str]) -> ImageArrays:
    if not bad_positions:
        return ImageArrays(images, split.labels.clone(), split.names)
    keep = torch.ones(len(split), dtype=torch.bool)
    keep[torch.tensor(bad_positions, dtype=torch.int64)] = False
    kept = keep.nonzero().squeeze(1)
    names = [split.names[i] for i in kept.tolist()] if split.names is not None else None
    return ImageArrays(images.index_select(0, kept), split.labels[kept], names)


def decode_split(
    split: StreamedImages, workers: int = 0, cache_dir: Path | None = None, batch_size: int = 256
) -> tuple[ImageArrays, list[str]]:
    """Decode every image of ``split`` with ``workers`` processes into uint8 ``[N, C, S, S]``.

    With a ``cache_dir`` and a source that has a fingerprint, the array is written there as a
    ``.npy`` (and read back memory-mapped by later runs: no decoding). Unreadable images stop
    with a :class:`DataError` naming them (``on_bad_image: fail``), or are left out
    (``skip``). Returns the in-memory split and lines for the log.
    """
    if hasattr(split.source, "read_rows"):  # an array on disk: slices, no decoding, no cache
        rows = split.rows.numpy()
        blocks = [split.source.read_rows(rows[i : i + 4096]) for i in range(0, len(rows), 4096)]
        return ImageArrays(torch.from_numpy(np.concatenate(blocks)), split.labels.clone(), split.names), []
    key = _cache_key(split) if cache_dir is not None else None
    if key is not None:
        images_path, meta_path = Path(cache_dir) / f"{key}.npy", Path(cache_dir) / f"{key}.json"
        if images_path.exists() and meta_path.exists():
            cached = _load_cached(images_path, meta_path, split)
            if cached is not None:
                arrays, bad = cached
                return arrays, [f"decoded images read from the cache {images_path}"] + _bad_lines(bad)
    shape = (len(split), *split.image_shape)
    target, tmp = None, None
    if key is not None:
        try:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            tmp = Path(cache_dir) / f"{key}.npy.{os.getpid()}.tmp"
            target = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        except OSError:  # an unwritable cache only costs the decoding next time
            target, tmp, key = None, None, None
    if target is None:
        target = np.empty(shape, dtype=np.uint8)
    bad_positions: list[int] = []
    bad: list[str] = []
    try:
        start = 0
        for batch in _loader(split, batch_size, workers, replace=False):
            if split.on_bad_image != "skip":
                batch.raise_failure()
            target[start : start + len(batch.index)] = batch.images.numpy()
            bad_positions += batch.index[~batch.ok].tolist()
            bad += batch.failures
            start += len(batch.index)
        if len(bad_positions) == len(split):
            raise DataError(f"{split.source.describe(split.rows[0].item())} and every other image of the split: "
                            "none could be read as an image.")
    except BaseException:
        if tmp is not None:
            del target
            tmp.unlink(missing_ok=True)
        raise
    if key is not None:
        target.flush()
        del target
        os.replace(tmp, images_path)
        _write_json(meta_path, {"bad_positions": bad_positions, "bad": bad})
        images = torch.from_numpy(np.load(images_path, mmap_mode="c"))
    else:
        images = torch.from_numpy(target)
    return _keep(split, images, bad_positions, bad), _bad_lines(bad)


def _write_json(path: Path, value: object) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _bad_lines(bad: list[str]) -> list[str]:
    if not bad:
        return []
    listed = "; ".join(bad[:LISTED])
    more = f" and {len(bad) - LISTED} more" if len(bad) > LISTED else ""
    return [f"skipped {len(bad)} unreadable image(s) (data.on_bad_image: skip): {listed}{more}"]
