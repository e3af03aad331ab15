"""Datasets that read files: flat and class image folders, WebDataset tar shards, .npy arrays."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.config import DataConfig
from selfsup.data import StreamedImages
from selfsup.engine.data_setup import prepare_data
from selfsup.errors import ConfigError, DataError
from selfsup.plugins.data.folders import image_folder, image_shards, npy_images
from selfsup.plugins.data.sources import decode_image

MEMORY = DataConfig(loader="memory", cache_dir=None, workers=0)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_decoding_resizes_the_shorter_side_and_crops_the_centre():
    # 4 x 8 (H x W): left half black, right half white; to 4 x 4 the centre columns 2..5 remain
    image = np.zeros((4, 8), np.uint8)
    image[:, 4:] = 255
    out = decode_image(io.BytesIO(_png(image)), image_size=4, channels=1)
    assert out.shape == (1, 4, 4) and out.dtype == np.uint8
    assert out[0, :, :2].max() == 0 and out[0, :, 2:].min() == 255
    rgb = decode_image(io.BytesIO(_png(image)), image_size=2, channels=3)
    assert rgb.shape == (3, 2, 2) and np.array_equal(rgb[0], rgb[2])  # grey to RGB: equal channels


def test_a_flat_folder_is_unlabelled_and_class_folders_are_labelled(tmp_path):
    for i in range(3):
        (tmp_path / "flat" / "nested").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((5, 5), i * 100, np.uint8)).save(tmp_path / "flat" / f"{i}.png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "flat" / "nested" / "x.jpg")
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    flat = image_folder(str(tmp_path / "flat"), image_size=5, channels=1)
    assert isinstance(flat.train, StreamedImages) and flat.test is None and not flat.has_labels
    assert flat.train.names == ["0.png", "1.png", "2.png", "nested/x.jpg"]
    assert flat.train.labels.tolist() == [-1] * 4
    decoded = prepare_data(flat, MEMORY).train
    assert decoded.images[:, 0, 0, 0].tolist() == [0, 100, 200, 0]
    labelled = image_folder(str(tmp_path / "flat"), image_size=5, channels=1, labels="folders", test_fraction=0)
    assert labelled.class_names == ["nested"] and labelled.train.names == ["nested/x.jpg"]
    assert image_folder(str(tmp_path / "flat"), image_size=5, labels="none", test_fraction=0).test is None


def _write_shard(path: Path, first: int, count: int, labels: bool = True) -> None:
    webdataset = pytest.importorskip("webdataset")
    with webdataset.TarWriter(str(path)) as sink:
        for i in range(first, first + count):
            sample = {"__key__": f"sample{i:04d}", "png": _png(np.full((6, 6), i, np.uint8))}
            if labels:
                sample["cls"] = str(i % 2).encode()
            sink.write(sample)


def test_webdataset_shards_stream_with_labels_and_a_stratified_split(tmp_path):
    for shard in range(3):
        _write_shard(tmp_path / f"train-{shard:03d}.tar", shard * 10, 10)
    splits = image_shards(str(tmp_path / "train-{000..002}.tar"), image_size=6, channels=1, test_fraction=0.2)
    assert len(splits.train) == 24 and len(splits.test) == 6 and splits.class_names == ["0", "1"]
    assert sorted(splits.test.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    memory = prepare_data(splits, MEMORY)
    values = memory.train.images[:, 0, 0, 0]  # pixel value = sample number, label = its parity
    assert torch.equal(values.long() % 2, memory.train.labels)
    assert [int(name[-4:]) for name in memory.train.names] == values.tolist()  # names follow the rows
    assert memory.train.names[0].startswith("train-000.tar/sample")
    glob = image_shards(str(tmp_path / "train-*.tar"), image_size=6, channels=1)
    assert len(glob.train) == 30 and glob.test is None


def test_shard_and_npy_errors_name_the_file(tmp_path):
    (tmp_path / "bad.tar").write_bytes(b"this is not a tar archive at all" * 40)
    with pytest.raises(DataError, match=r"bad.tar: not a tar archive"):
        image_shards(str(tmp_path / "bad.tar"))
    with pytest.raises(DataError, match=r"missing-000.tar: shard not found"):
        image_shards(str(tmp_path / "missing-{000..001}.tar"))
    np.save(tmp_path / "floats.npy", np.zeros((2, 4, 4), np.float32))
    with pytest.raises(DataError, match=r"floats.npy: expected uint8 images, found dtype float32"):
        npy_images(str(tmp_path / "floats.npy"))
    with pytest.raises(DataError, match=r"nothing.npy: .npy file not found"):
        npy_images(str(tmp_path / "nothing.npy"))
    with pytest.raises(ConfigError, match="test_fraction"):
        image_shards(str(tmp_path / "bad.tar"), test_fraction=1.0)


def test_npy_images_are_memory_mapped_rows_in_any_layout(tmp_path):
    images = np.arange(5 * 4 * 4 * 3, dtype=np.uint8).reshape(5, 4, 4, 3)  # NHWC
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", np.array([0, 1, 0, 1, 1]))
    splits = npy_images(str(tmp_path / "x.npy"), labels=str(tmp_path / "y.npy"), layout="NHWC")
    assert splits.train.image_shape == (3, 4, 4) and splits.train.labels.tolist() == [0, 1, 0, 1, 1]
    assert splits.train.source._array is None  # nothing opened until read
    chosen = splits.train.select(torch.tensor([4, 1]))
    assert np.array_equal(chosen.images.numpy(), images[[4, 1]].transpose(0, 3, 1, 2))
    memory = prepare_data(splits, MEMORY).train
    assert np.array_equal(memory.images.numpy(), images.transpose(0, 3, 1, 2))
    with pytest.raises(DataError, match="expected 5 labels"):
        np.save(tmp_path / "short.npy", np.array([0, 1]))
        npy_images(str(tmp_path / "x.npy"), labels=str(tmp_path / "short.npy"), layout="NHWC")
