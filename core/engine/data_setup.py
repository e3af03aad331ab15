"""Where the data lives during a run: decoded into memory, or streamed from its files.

A dataset factory returns in-memory arrays (digits, ``.npz``) or streamed splits (image
folders, tar shards, ``.npy`` files; :class:`~selfsup.data.StreamedImages`). :func:`prepare_data`
applies ``data.loader``: ``memory`` decodes streamed splits once with the workers (through the
decode cache), ``stream`` keeps them streamed, ``auto`` chooses by the decoded size against
``data.memory_budget_gb``. What it decided is in the returned splits' ``notes`` (the log).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..config import DataConfig
from ..data import DataSplits, StreamedImages
from ..errors import ConfigError
from ..streaming import decode_split, default_cache_dir

GB = 1e9


def resolve_workers(workers: int | None) -> int:
    """``data.workers``, or by default one per CPU core but one, at most 8."""
    if workers is not None:
        return int(workers)
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def memory_budget(cfg: DataConfig) -> float:
    """Bytes of decoded images ``loader: auto`` keeps in memory: ``memory_budget_gb``, or a
    quarter of the machine's physical memory."""
    if cfg.memory_budget_gb is not None:
        return cfg.memory_budget_gb * GB
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 4
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return 4 * GB


def cache_dir(cfg: DataConfig) -> Path | None:
    if cfg.cache_dir is None:
        return None
    return default_cache_dir() if cfg.cache_dir == "auto" else Path(cfg.cache_dir).expanduser()


def prepare_data(data: DataSplits, cfg: DataConfig) -> DataSplits:
    """``data`` with its streamed splits decoded into memory or left streaming, per ``data.loader``."""
    streamed = [s for s in (data.train, data.test) if isinstance(s, StreamedImages)]
    if not streamed:
        if cfg.loader == "stream":
            raise ConfigError(
                f"data.loader: stream reads image files batch by batch, but {data.source or 'this dataset'} is "
                "already held in memory as arrays; use data.loader: memory (or auto), or a dataset that reads "
                "files (image_folder, image_shards, npy_images)."
            )
        return data
    workers = resolve_workers(cfg.workers)
    train, test = (dataclasses.replace(s, workers=workers, on_bad_image=cfg.on_bad_image)
                   if isinstance(s, StreamedImages) else s for s in (data.train, data.test))
    decoded = sum(s.nbytes for s in (train, test) if isinstance(s, StreamedImages))
    budget = memory_budget(cfg)
    mode = cfg.loader
    notes = list(data.notes)
    if mode == "auto":
        mode = "memory" if decoded <= budget else "stream"
        notes.append(f"data.loader: auto chose {'memory' if mode == 'memory' else 'streaming'}: the decoded images "
                     f"take {decoded / GB:.2f} GB, the budget (data.memory_budget_gb) is {budget / GB:.2f} GB")
    if mode == "stream":
        notes.append(f"streaming {len(train):,} training images from {data.source} with {workers} worker(s)")
        return DataSplits(train, test, data.class_names, data.source, notes)
    where = cache_dir(cfg)
    splits = []
    for split in (train, test):
        if isinstance(split, StreamedImages):
            split, lines = decode_split(split, workers, where)
            notes += lines
        splits.append(split)
    return DataSplits(splits[0], splits[1], data.class_names, data.source, notes)


def check_eval_data(eval_data: DataSplits, data: DataSplits) -> None:
    """Refuse an ``eval.data`` the model cannot read or cannot score, naming the key."""
    if eval_data.is_multimodal != data.is_multimodal:
        raise ConfigError("eval.data: the evaluation data must be of the training data's kind (images or modalities).")
    if not data.is_multimodal and eval_data.train.image_shape != data.train.image_shape:
        raise ConfigError(
            f"eval.data: images of shape {list(eval_data.train.image_shape)} (C, H, W), but the model trains on "
            f"{list(data.train.image_shape)}; give the evaluation dataset the same image_size and channels."
        )
    if not eval_data.has_labels or not bool((eval_data.train.labels >= 0).any()):
        raise ConfigError(
            f"eval.data: {eval_data.source or 'the evaluation dataset'} has no labelled train and test splits; kNN "
            "evaluation needs labels (a folder with class sub-folders, or an .npz with labels)."
        )
