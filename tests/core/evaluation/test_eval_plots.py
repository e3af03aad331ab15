"""Tests of the PNG plots."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.evaluation import save_embedding_map, save_loss_curve
from selfsup.evaluation.plots import _subsample

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_bytes: int = 5_000) -> tuple[int, int]:
    """Check the signature and IHDR chunk; return (width, height)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 200 and height > 200
    assert len(data) > min_bytes
    assert data.rstrip()[-8:-4] == b"IEND"
    return width, height


def test_loss_curve_png(tmp_path: Path) -> None:
    target = tmp_path / "new" / "dirs" / "loss.png"
    steps = list(range(0, 500, 10))
    losses = [5.0 * np.exp(-s / 100) + 0.1 for s in steps]
    written = save_loss_curve(steps, losses, target, title="InfoNCE")
    assert written == target
    assert_png(target)
    assert [p.name for p in target.parent.iterdir()] == ["loss.png"]  # no temp file left


def test_loss_curve_overwrites_and_accepts_str_path(tmp_path: Path) -> None:
    target = tmp_path / "loss.png"
    target.write_bytes(b"old")
    save_loss_curve([1, 2], [1.0, float("nan")], str(target))
    assert_png(target, min_bytes=1_000)


def test_loss_curve_rejects_mismatched_lengths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 values but losses has 2"):
        save_loss_curve([1, 2, 3], [1.0, 2.0], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_embedding_map_png(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(90) % 3
    features = torch.eye(3, 16)[labels] * 6 + torch.randn(90, 16, generator=gen)
    target = tmp_path / "maps" / "tsne.png"
    written = save_embedding_map(
        features, labels, target, max_points=60, class_names=["cat", "dog", "frog"]
    )
    assert written == target
    assert_png(target)
    assert [p.name for p in target.parent.iterdir()] == ["tsne.png"]


def test_embedding_map_accepts_numpy_and_mapping_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    target = save_embedding_map(
        rng.normal(size=(40, 5)), rng.integers(0, 12, 40), tmp_path / "m.png",
        class_names={0: "zero"},
    )
    assert_png(target)


def test_subsample_is_seeded_and_bounded() -> None:
    first = _subsample(1000, 50, seed=3)
    assert len(first) == 50 == len(set(first.tolist()))
    assert np.all(np.diff(first) > 0) and first.max() < 1000
    assert np.array_equal(first, _subsample(1000, 50, seed=3))
    assert not np.array_equal(first, _subsample(1000, 50, seed=4))
    assert np.array_equal(_subsample(30, 50, seed=0), np.arange(30))


def test_embedding_map_rejects_bad_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"labels must have shape \[10\]"):
        save_embedding_map(np.zeros((10, 4)), np.zeros(9), tmp_path / "m.png")
    with pytest.raises(ValueError, match=r"features must have shape \[N, D\]"):
        save_embedding_map(np.zeros(10), np.zeros(10), tmp_path / "m.png")


def test_save_curves_writes_png_and_rejects_empty(tmp_path):
    from selfsup.evaluation import save_curves

    path = save_curves({"a": ([0, 1, 2], [50.0, 60.0, 70.0]), "b": ([0, 2], [40.0, 80.0])}, tmp_path / "c.png",
                       xlabel="min", ylabel="acc", hlines={"baseline": 75.3})
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(ValueError, match="no curves"):
        save_curves({}, tmp_path / "d.png", xlabel="x", ylabel="y")
