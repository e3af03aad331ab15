"""Multimodal datasets: multi-view digits, multi-view of any image dataset, several arrays from one .npz."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfsup.config import build
from selfsup.data import DataSplits, MultiModalArrays
from selfsup.errors import ConfigError, DataError
from selfsup.plugins.data.datasets import digits
from selfsup.plugins.multimodal.datasets import multimodal_arrays, multiview_digits, views_of_images


@pytest.fixture(scope="module")
def digit_views() -> DataSplits:
    return multiview_digits()


def test_multiview_digits_shapes_and_context(digit_views: DataSplits) -> None:
    assert digit_views.is_multimodal and isinstance(digit_views.train, MultiModalArrays)
    assert digit_views.modality_shapes == {"patches": (16, 4), "rows": (8, 8), "columns": (8, 8), "spectrum": (8, 5)}
    assert (len(digit_views.train), len(digit_views.test)) == (1437, 360)
    context = digit_views.context()
    assert context["modality_shapes"] == digit_views.modality_shapes and context["num_classes"] == 10
    assert "in_channels" not in context and context["num_train"] == 1437
    train = digit_views.train.modalities["rows"]
    torch.testing.assert_close(train.mean(dim=(0, 1)), torch.zeros(8), atol=1e-5, rtol=0)  # standardised


def test_multiview_keeps_the_image_split_and_pixels() -> None:
    images = digits()
    views = views_of_images(images, ["rows", "columns"], standardize=False)
    torch.testing.assert_close(views.train.labels, images.train.labels)
    pixels = images.test.images.float() / 255
    torch.testing.assert_close(views.test.modalities["rows"], pixels[:, 0])
    torch.testing.assert_close(views.test.modalities["columns"], pixels[:, 0].transpose(1, 2))


def test_multiview_wraps_an_npz_image_dataset(registry, tmp_path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "rgb.npz"
    np.savez(path, x_train=rng.integers(0, 256, (20, 12, 12, 3), dtype=np.uint8), y_train=np.arange(20) % 2,
             x_test=rng.integers(0, 256, (6, 12, 12, 3), dtype=np.uint8), y_test=np.arange(6) % 2)
    node = {"name": "multiview", "source": {"name": "arrays", "path": str(path)}}
    data = build(registry, "dataset", node, "data.dataset")
    # default patch = 12 // 4 = 3: 16 patches of 3*3*3 values; rows 12 x (3*12); spectrum 12 x 3*7
    assert data.modality_shapes == {"patches": (16, 27), "rows": (12, 36), "columns": (12, 36), "spectrum": (12, 21)}
    assert (len(data.train), len(data.test)) == (20, 6)
    with pytest.raises(ConfigError, match="data.dataset.source.path"):
        build(registry, "dataset", {"name": "multiview", "source": {"name": "arrays"}}, "data.dataset")
    with pytest.raises(ConfigError, match="modalities"):
        build(registry, "dataset", {"name": "multiview_digits", "modalities": ["rows", "edges"]}, "data.dataset")
    with pytest.raises(ConfigError, match="patch_size"):
        build(registry, "dataset", {"name": "multiview_digits", "patch_size": 9}, "data.dataset")


# --------------------------------------------------------------------------- multimodal_arrays
def _write(tmp_path, **arrays) -> str:
    path = tmp_path / "mm.npz"
    np.savez(path, **arrays)
    return str(path)


def test_multimodal_arrays_reads_one_key_per_modality(tmp_path) -> None:
    rng = np.random.default_rng(0)
    audio, text = rng.normal(size=(40, 5, 3)), rng.normal(size=(40, 7)).astype(np.float32)
    labels = np.arange(40) % 4
    path = _write(tmp_path, audio=audio, text=text, y=labels)
    data = multimodal_arrays(path, ["audio", "text"], labels_key="y", standardize=False)
    assert data.modality_shapes == {"audio": (5, 3), "text": (1, 7)}  # [N, F] is one token
    assert (len(data.train), len(data.test)) == (32, 8) and data.class_names == ["0", "1", "2", "3"]
    all_audio = torch.cat([data.train.modalities["audio"], data.test.modalities["audio"]])
    assert sorted(all_audio[:, 0, 0].tolist()) == sorted(audio[:, 0, 0].astype(np.float32).tolist())
    standardized = multimodal_arrays(path, ["audio", "text"], labels_key="y")
    assert abs(float(standardized.train.modalities["text"].mean())) < 1e-5


def test_multimodal_arrays_with_test_keys(tmp_path) -> None:
    path = _write(tmp_path, a=np.ones((6, 2, 3)), b=np.zeros((6, 4)), y=np.array([0, 1] * 3),
                  a_test=np.ones((2, 2, 3)), b_test=np.zeros((2, 4)), y_test=np.array([1, 0]))
    data = multimodal_arrays(path, ["a", "b"], "y", ["a_test", "b_test"], "y_test")
    assert list(data.test.modalities) == ["a", "b"] and data.test.labels.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("arrays", "kwargs", "error", "match"),
    [
        ({"a": np.ones((4, 2, 3)), "y": np.zeros(4, int)}, {"modalities": ["a", "c"]}, DataError, "key 'c' not found"),
        ({"a": np.ones((4, 2, 3)), "c": np.ones((5, 2)), "y": np.zeros(4, int)}, {"modalities": ["a", "c"]},
         DataError, "expected 4 samples"),
        ({"a": np.full((4, 2, 3), np.nan), "y": np.zeros(4, int)}, {"modalities": ["a"]}, DataError, "finite"),
        ({"a": np.ones((4, 2, 3, 1)), "y": np.zeros(4, int)}, {"modalities": ["a"]}, DataError, r"\[N, T, F\]"),
        ({"a": np.ones((4, 2)), "y": np.zeros(4, int)}, {"modalities": ["a"], "test_modalities": ["a"]},
         ConfigError, "both be set"),
        ({"a": np.ones((4, 2)), "y": np.zeros(4, int)}, {"modalities": []}, ConfigError, "non-empty"),
        ({"a": np.ones((4, 2)), "y": np.zeros(4, int), "t": np.ones((2, 3)), "ty": np.zeros(2, int)},
         {"modalities": ["a"], "test_modalities": ["t"], "test_labels_key": "ty"}, DataError, "shaped like 'a'"),
    ],
)
def test_multimodal_arrays_errors(tmp_path, arrays, kwargs, error, match) -> None:
    path = _write(tmp_path, **arrays)
    with pytest.raises(error, match=match):
        multimodal_arrays(path, labels_key="y", **kwargs)
