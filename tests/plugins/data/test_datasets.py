"""Dataset factories: digits, .npz arrays, torchvision (from locally written files), image folders."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.data import DataSplits
from selfsup.config import DataConfig
from selfsup.engine.data_setup import prepare_data
from selfsup.errors import DataError
from selfsup.plugins.data import register
from selfsup.plugins.data.datasets import arrays, digits, split_indices, torchvision
from selfsup.plugins.data.folders import image_folder
from selfsup.registry import Registry


def _check_splits(splits: DataSplits) -> None:
    for part in (splits.train, splits.test):
        assert part.images.dtype == torch.uint8
        assert part.labels.dtype == torch.int64
        assert part.images.dim() == 4
        assert part.labels.shape == (part.images.shape[0],)


# --------------------------------------------------------------------------- digits
def test_digits_through_registry() -> None:
    registry = Registry()
    register(registry)
    assert registry.names("dataset") == ["arrays", "digits", "image_folder", "image_shards", "npy_images", "torchvision"]
    splits = registry.create("dataset", "digits")
    _check_splits(splits)
    assert splits.train.images.shape == (1437, 1, 8, 8)
    assert splits.test.images.shape == (360, 1, 8, 8)
    assert splits.class_names == [str(i) for i in range(10)]
    assert int(splits.train.images.max()) == 255 and int(splits.train.images.min()) == 0
    assert splits.context() == {"in_channels": 1, "image_size": 8, "num_classes": 10, "num_train": 1437}


def test_digits_split_is_stratified_and_deterministic() -> None:
    a, b, c = digits(seed=0), digits(seed=0), digits(seed=1, test_fraction=0.5)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert len(c.test) in (898, 899) and len(c.train) + len(c.test) == 1797
    counts = torch.bincount(a.test.labels, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37  # ~20% of ~180 per class


def test_split_indices_falls_back_when_classes_are_too_small() -> None:
    labels = np.array([0, 0, 0, 0, 1, 2, 2, 2])  # class 1 has a single sample
    train, test = split_indices(labels, 0.25, seed=0)
    assert len(train) + len(test) == 8 and not set(train) & set(test)


# --------------------------------------------------------------------------- .npz arrays
def _labels(n: int, classes: int = 3) -> np.ndarray:
    return np.arange(n, dtype=np.int64) % classes


@pytest.mark.parametrize(
    ("shape", "layout", "expected"),
    [
        ((12, 5, 7, 3), "auto", (3, 5, 7)),  # NHWC, non-square kept
        ((12, 3, 5, 7), "auto", (3, 5, 7)),  # NCHW
        ((12, 5, 7), "auto", (1, 5, 7)),  # NHW grey
        ((12, 6, 6, 1), "NHWC", (1, 6, 6)),
        ((12, 4, 6, 6), "NCHW", (3, 6, 6)),  # RGBA: alpha dropped
    ],
)
def test_arrays_layouts_round_trip(
    tmp_path: Path, shape: tuple[int, ...], layout: str, expected: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=shape, dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=_labels(12), x_test=x[:4], y_test=_labels(4))
    splits = arrays(str(path), layout=layout)
    _check_splits(splits)
    assert splits.train.images.shape == (12, *expected)
    assert splits.test.images.shape == (4, *expected)
    nchw = x[:, None] if x.ndim == 3 else (x.transpose(0, 3, 1, 2) if shape[-1] in (1, 3) else x)
    assert np.array_equal(splits.train.images.numpy(), nchw[:, :3])
    assert splits.train.labels.tolist() == _labels(12).tolist()
    assert splits.class_names == ["0", "1", "2"]


def test_arrays_float_inputs_are_rescaled(tmp_path: Path) -> None:
    unit = np.linspace(0, 1, 10 * 16, dtype=np.float32).reshape(10, 4, 4)
    path = tmp_path / "f.npz"
    np.savez(path, x_train=unit, y_train=_labels(10), x_test=unit * 255.0, y_test=_labels(10))
    splits = arrays(str(path))
    expected = np.rint(unit * 255).astype(np.uint8)[:, None]
    assert np.array_equal(splits.train.images.numpy(), expected)
    assert np.array_equal(splits.test.images.numpy(), expected)


def test_arrays_splits_train_when_test_keys_absent_or_null(tmp_path: Path) -> None:
    x = np.zeros((50, 8, 8), dtype=np.uint8)
    path = tmp_path / "train_only.npz"
    np.savez(path, images=x, labels=_labels(50, 5))
    splits = arrays(str(path), images_key="images", labels_key="labels", test_fraction=0.2, seed=3)
    assert (len(splits.train), len(splits.test)) == (40, 10)
    assert torch.bincount(splits.test.labels).tolist() == [2, 2, 2, 2, 2]  # stratified
    again = arrays(str(path), images_key="images", labels_key="labels", test_fraction=0.2, seed=3)
    assert torch.equal(splits.test.labels, again.test.labels)
    both = tmp_path / "both.npz"
    np.savez(both, x_train=x, y_train=_labels(50, 5), x_test=x[:5], y_test=_labels(5, 5))
    nulled = arrays(str(both), test_images_key=None, test_labels_key=None, class_names=list("abcde"))
    assert len(nulled.test) == 10 and nulled.class_names == list("abcde")


def test_arrays_reads_the_benchmark_file_shape(tmp_path: Path) -> None:
    """Same keys and layout as ../shared/data/fashion_mnist.npz, small."""
    path = tmp_path / "fashion_like.npz"
    x = np.random.default_rng(1).integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    np.savez(path, x_train=x, y_train=_labels(30, 10), x_test=x[:10], y_test=_labels(10, 10))
    splits = arrays(str(path))
    assert splits.train.images.shape == (30, 1, 28, 28) and splits.num_classes == 10


# --------------------------------------------------------------------------- .npz errors
def _raises(match_all: list[str], fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for part in match_all:
        assert part in message, f"{part!r} not in {message!r}"
    return message


def _write(tmp_path: Path, **arrays_: np.ndarray) -> str:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays_)
    return str(path)


def test_error_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.npz")
    _raises([path, "not found", "not downloaded"], arrays, path)


def test_error_not_an_npz(tmp_path: Path) -> None:
    text = tmp_path / "notes.npz"
    text.write_text("hello, not a zip\n")
    _raises([str(text), ".npz"], arrays, str(text))
    single = tmp_path / "single.npy"
    np.save(single, np.zeros((3, 4, 4), dtype=np.uint8))
    _raises([str(single), "single .npy array", "(3, 4, 4)"], arrays, str(single))


def test_error_missing_key_lists_keys_present(tmp_path: Path) -> None:
    path = _write(tmp_path, images=np.zeros((4, 4, 4), np.uint8), y_train=_labels(4))
    _raises([path, "'x_train'", "keys present", "'images'", "'y_train'"], arrays, path)


def test_error_explicit_test_key_missing(tmp_path: Path) -> None:
    path = _write(tmp_path, x_train=np.zeros((4, 4, 4), np.uint8), y_train=_labels(4))
    _raises([path, "'x_val'", "keys present"], arrays, path, test_images_key="x_val", test_labels_key="y_val")


def test_error_wrong_image_ndim(tmp_path: Path) -> None:
    path = _write(tmp_path, x_train=np.zeros((4, 16), np.uint8), y_train=_labels(4))
    _raises([path, "'x_train'", "[N, H, W]", "(4, 16)"], arrays, path)


def test_error_unknown_channel_count(tmp_path: Path) -> None:
    path = _write(tmp_path, x_train=np.zeros((4, 5, 6, 7), np.uint8), y_train=_labels(4))
    _raises([path, "'x_train'", "C in (1, 3, 4)", "(4, 5, 6, 7)"], arrays, path)


def test_error_ambiguous_layout(tmp_path: Path) -> None:
    path = _write(tmp_path, x_train=np.zeros((4, 3, 8, 3), np.uint8), y_train=_labels(4))
    _raises([path, "'x_train'", "ambiguous", "layout"], arrays, path)
    assert arrays(path, layout="NCHW").train.images.shape[1:] == (3, 8, 3)


def test_error_explicit_layout_mismatch(tmp_path: Path) -> None:
    path = _write(tmp_path, x_train=np.zeros((4, 3, 8, 8), np.uint8), y_train=_labels(4))
    _raises([path, "'x_train'", "'NHWC'", "(4, 3, 8, 8)"], arrays, path, layout="NHWC")


def test_error_label_count_mismatch(tmp_path: Path) -> None:
    path = _write(tmp_path, x_train=np.zeros((4, 4, 4), np.uint8), y_train=_labels(5))
    _raises([path, "'y_train'", "expected 4 labels", "found 5"], arrays, path)


def test_error_label_shape(tmp_path: Path) -> None:
    path = _write(tmp_path, x_train=np.zeros((4, 4, 4), np.uint8), y_train=np.eye(4, dtype=np.int64))
    _raises([path, "'y_train'", "1-D", "(4, 4)"], arrays, path)


def test_error_non_integer_labels(tmp_path: Path) -> None:
    path = _write(tmp_path, x_train=np.zeros((4, 4, 4), np.uint8), y_train=np.array([0.0, 1.5, 2.0, 1.0]))
    _raises([path, "'y_train'", "integer", "float64"], arrays, path)


def test_error_nan_values(tmp_path: Path) -> None:
    x = np.zeros((4, 4, 4), np.float32)
    x[1, 2, 3] = np.nan
    path = _write(tmp_path, x_train=x, y_train=_labels(4))
    _raises([path, "'x_train'", "NaN"], arrays, path)


def test_error_float_out_of_range(tmp_path: Path) -> None:
    path = _write(tmp_path, x_train=np.full((4, 4, 4), 300.0, np.float32), y_train=_labels(4))
    _raises([path, "'x_train'", "[0, 1] or [0, 255]", "300"], arrays, path)


def test_error_test_images_differ_in_shape(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        x_train=np.zeros((4, 4, 4), np.uint8),
        y_train=_labels(4),
        x_test=np.zeros((2, 5, 5), np.uint8),
        y_test=_labels(2),
    )
    _raises([path, "'x_test'", "[N, 1, 4, 4]", "[N, 1, 5, 5]"], arrays, path)


def test_error_pickled_arrays_are_never_loaded(tmp_path: Path) -> None:
    path = _write(tmp_path, x_train=np.array([object(), 1], dtype=object), y_train=_labels(2))
    _raises([path, "'x_train'", "unpickling"], arrays, path)


def test_error_too_few_class_names(tmp_path: Path) -> None:
    path = _write(tmp_path, x_train=np.zeros((6, 4, 4), np.uint8), y_train=_labels(6))
    _raises([path, "class_names", "at least 3"], arrays, path, class_names=["a", "b"])


# --------------------------------------------------------------------------- torchvision
def _write_idx_images(path: Path, images: np.ndarray) -> None:
    n, h, w = images.shape
    path.write_bytes(struct.pack(">iiii", 2051, n, h, w) + images.astype(np.uint8).tobytes())


def _write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">ii", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def _tiny_mnist(root: Path, name: str = "MNIST") -> tuple[np.ndarray, np.ndarray]:
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    labels = np.arange(20) % 10
    for prefix, sl in (("train", slice(0, 14)), ("t10k", slice(14, 20))):
        _write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images[sl])
        _write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels[sl])
    return images, labels


def test_torchvision_mnist_from_local_idx_files(tmp_path: Path) -> None:
    images, labels = _tiny_mnist(tmp_path)
    splits = torchvision("MNIST", root=str(tmp_path))
    _check_splits(splits)
    assert splits.train.images.shape == (14, 1, 28, 28) and splits.test.images.shape == (6, 1, 28, 28)
    assert np.array_equal(splits.train.images[:, 0].numpy(), images[:14])
    assert splits.test.labels.tolist() == labels[14:].tolist()
    assert len(splits.class_names) == 10 and splits.class_names[0].startswith("0")
    resized = torchvision("mnist", root=str(tmp_path), image_size=16)  # case-insensitive name
    assert resized.train.images.shape == (14, 1, 16, 16)


def test_torchvision_cifar10_from_local_pickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # torchvision checks the md5 of each CIFAR file against the published archive, which
    # locally written files cannot match; only that integrity check is patched (to "file exists").
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
        batches[name] = data
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": [0, 1, 2]}, f)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)

    splits = torchvision("CIFAR10", root=str(tmp_path))
    _check_splits(splits)
    assert splits.train.images.shape == (15, 3, 32, 32) and splits.test.images.shape == (3, 3, 32, 32)
    assert np.array_equal(splits.train.images[:3].numpy(), batches["data_batch_1"].reshape(3, 3, 32, 32))
    assert splits.class_names == names and splits.train.labels.tolist()[:3] == [0, 1, 2]


def test_torchvision_missing_files_say_how_to_get_them(tmp_path: Path) -> None:
    _raises(["FashionMNIST", str(tmp_path), "download: true", "raw"], torchvision, "FashionMNIST", root=str(tmp_path))


def test_torchvision_unknown_name_lists_supported() -> None:
    _raises(["'MNSIT'", "Did you mean", "'MNIST'", "CIFAR10", "STL10"], torchvision, "MNSIT")


# --------------------------------------------------------------------------- image folders
def _write_pngs(root: Path, classes: dict[str, int], size: tuple[int, int] = (20, 12)) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_image_folder_split_and_test_root(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "train", {"cat": 5, "dog": 5})
    splits = prepare_data(image_folder(str(tmp_path / "train"), image_size=8, test_fraction=0.2, seed=0), DataConfig())
    _check_splits(splits)
    assert splits.train.images.shape == (8, 3, 8, 8) and splits.test.images.shape == (2, 3, 8, 8)
    assert splits.class_names == ["cat", "dog"] and sorted(splits.test.labels.tolist()) == [0, 1]

    _write_pngs(tmp_path / "test", {"dog": 2})
    held_out = image_folder(str(tmp_path / "train"), image_size=8, test_root=str(tmp_path / "test"))
    assert len(held_out.train) == 10 and held_out.test.labels.tolist() == [1, 1]  # 'dog' keeps index 1


def test_image_folder_errors(tmp_path: Path) -> None:
    _raises([str(tmp_path / "missing"), "not found"], image_folder, str(tmp_path / "missing"))
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    _raises([str(tmp_path / "empty"), "no images"], image_folder, str(tmp_path / "empty"))
    _write_pngs(tmp_path / "broken", {"cat": 2})
    (tmp_path / "broken" / "cat" / "bad.png").write_bytes(b"not a png")
    bad = str(tmp_path / "broken" / "cat" / "bad.png")
    _raises([bad, "could not be read as an image", "on_bad_image"], prepare_data,
            image_folder(str(tmp_path / "broken")), DataConfig(loader="memory", cache_dir=None))
