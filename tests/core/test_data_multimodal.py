"""Multimodal splits in the core: MultiModalArrays, DataSplits context, loader batches, feature extraction."""

from __future__ import annotations

import pytest
import torch

from selfsup.data import DataSplits, ImageArrays, MultiModalArrays
from selfsup.engine.loader import InMemoryBatches
from selfsup.evaluation import extract_features


def _split(n: int = 10, seed: int = 0) -> MultiModalArrays:
    g = torch.Generator().manual_seed(seed)
    return MultiModalArrays({"a": torch.randn(n, 3, 2, generator=g), "b": torch.randn(n, 5, 4, generator=g)},
                            torch.arange(n) % 3)


def test_multimodal_arrays_interface() -> None:
    split = _split()
    assert len(split) == 10 and split.shapes == {"a": (3, 2), "b": (5, 4)}
    index = torch.tensor([4, 0, 7])
    part = split.select(index)
    assert part.labels.tolist() == [1, 0, 1]
    torch.testing.assert_close(part.modalities["b"], split.modalities["b"][index])
    floats = split.as_float()
    assert all(x.dtype == torch.float32 for x in floats.values()) and split.inputs is split.modalities


@pytest.mark.parametrize(
    ("modalities", "labels", "match"),
    [
        ({}, torch.zeros(2, dtype=torch.long), "non-empty"),
        ({"a": torch.zeros(2, 3)}, torch.zeros(2, dtype=torch.long), r"\[N, T, F\]"),
        ({"a": torch.zeros(2, 3, 1, dtype=torch.long)}, torch.zeros(2, dtype=torch.long), "floating"),
        ({"a": torch.zeros(3, 3, 1)}, torch.zeros(2, dtype=torch.long), "3 samples"),
    ],
)
def test_multimodal_arrays_validation(modalities, labels, match) -> None:
    with pytest.raises(ValueError, match=match):
        MultiModalArrays(modalities, labels)


def test_data_splits_context_and_checks() -> None:
    data = DataSplits(_split(10), _split(4, seed=1), class_names=["x", "y", "z"])
    assert data.is_multimodal and data.context() == {
        "modality_shapes": {"a": (3, 2), "b": (5, 4)}, "num_classes": 3, "num_train": 10}
    with pytest.raises(ValueError, match="image channels"):
        data.in_channels
    images = ImageArrays(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    assert DataSplits(images, images).context()["in_channels"] == 1
    with pytest.raises(ValueError, match="same type"):
        DataSplits(_split(), images)
    other = MultiModalArrays({"a": torch.zeros(2, 3, 2)}, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="same modalities"):
        DataSplits(_split(), other)


def test_loader_gathers_multimodal_batches_in_the_image_order() -> None:
    split = _split(10)
    images = ImageArrays(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous(),
                         split.labels)
    multi = list(InMemoryBatches(split, 4, torch.device("cpu"), seed=3).epoch(1))
    plain = list(InMemoryBatches(images, 4, torch.device("cpu"), seed=3).epoch(1))
    assert len(multi) == len(plain) == 2
    for (inputs, labels, index), (_, plain_labels, plain_index) in zip(multi, plain):
        assert torch.equal(index, plain_index) and torch.equal(labels, plain_labels)
        torch.testing.assert_close(inputs["b"], split.modalities["b"][index])
    resumed = list(InMemoryBatches(split, 4, torch.device("cpu"), seed=3).epoch(1, start_batch=1))
    torch.testing.assert_close(resumed[0][0]["a"], multi[1][0]["a"])


def test_extract_features_from_a_mapping() -> None:
    split = _split(7)
    seen = []

    def embed(x: dict[str, torch.Tensor]) -> torch.Tensor:
        seen.append({m: v.shape[0] for m, v in x.items()})
        return torch.cat([x["a"].flatten(1), x["b"].mean(1)], dim=1)

    features = extract_features(embed, split.modalities, batch_size=3)
    assert [s["a"] for s in seen] == [3, 3, 1] and features.shape == (7, 10)
    expected = torch.cat([split.modalities["a"].flatten(1), split.modalities["b"].mean(1)], dim=1)
    torch.testing.assert_close(features, expected)
    with pytest.raises(ValueError, match="same number of samples"):
        extract_features(embed, {"a": torch.zeros(2, 3, 2), "b": torch.zeros(3, 5, 4)})
    with pytest.raises(ValueError, match="empty mapping"):
        extract_features(embed, {})
