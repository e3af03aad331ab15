"""Tests of batched feature extraction."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from selfsup.evaluation import extract_features


class RecordingEmbed:
    """Flatten + fixed linear map; remembers the batches it saw."""

    def __init__(self, in_dim: int, out_dim: int = 5) -> None:
        self.linear = nn.Linear(in_dim, out_dim)
        self.batches: list[Tensor] = []

    def __call__(self, x: Tensor) -> Tensor:
        self.batches.append(x.clone())
        return self.linear(x.flatten(1))


@pytest.fixture
def uint8_images() -> Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (10, 3, 4, 4), generator=gen, dtype=torch.uint8)


def test_uint8_and_float_inputs_give_identical_features(uint8_images: Tensor) -> None:
    embed = RecordingEmbed(48)
    from_uint8 = extract_features(embed, uint8_images, batch_size=4)
    from_float = extract_features(embed, uint8_images.float() / 255.0, batch_size=4)
    assert from_uint8.shape == (10, 5)
    assert from_uint8.dtype == torch.float32 and from_uint8.device.type == "cpu"
    torch.testing.assert_close(from_uint8, from_float, rtol=0, atol=1e-6)


def test_embed_fn_sees_unit_range_float32(uint8_images: Tensor) -> None:
    embed = RecordingEmbed(48)
    extract_features(embed, uint8_images, batch_size=4)
    seen = torch.cat(embed.batches)
    assert all(batch.dtype == torch.float32 for batch in embed.batches)
    torch.testing.assert_close(seen, uint8_images.float() / 255.0)
    assert seen.max() <= 1.0 and seen.max() > 0.9


@pytest.mark.parametrize(("batch_size", "sizes"), [(4, [4, 4, 2]), (5, [5, 5]), (1, [1] * 10), (512, [10])])
def test_batch_boundaries(uint8_images: Tensor, batch_size: int, sizes: list[int]) -> None:
    embed = RecordingEmbed(48)
    features = extract_features(embed, uint8_images, batch_size=batch_size)
    assert [len(batch) for batch in embed.batches] == sizes
    expected = embed.linear(uint8_images.float().flatten(1) / 255.0)
    torch.testing.assert_close(features, expected.detach())
    # Rows stay in order across batches.
    torch.testing.assert_close(torch.cat(embed.batches), uint8_images.float() / 255.0)


def test_no_gradients_and_float64_input_become_float32() -> None:
    embed = RecordingEmbed(12)
    images = torch.rand(3, 3, 2, 2, dtype=torch.float64)
    features = extract_features(embed, images)
    assert not features.requires_grad
    assert features.dtype == torch.float32
    assert embed.batches[0].dtype == torch.float32


def test_non_float32_outputs_are_cast() -> None:
    features = extract_features(lambda x: x.flatten(1).double(), torch.rand(3, 1, 2, 2))
    assert features.dtype == torch.float32 and features.shape == (3, 4)


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (torch.rand(3, 4, 4), r"\[N, C, H, W\], got shape \(3, 4, 4\)"),
        (torch.zeros(2, 3, 4, 4, dtype=torch.int32), r"uint8.*or float"),
        (torch.zeros(0, 3, 4, 4), r"empty"),
    ],
)
def test_invalid_images_raise(images: Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        extract_features(lambda x: x.flatten(1), images)


def test_bad_embed_output_and_batch_size_raise() -> None:
    images = torch.rand(4, 1, 2, 2)
    with pytest.raises(ValueError, match=r"\[batch, dim\].*\(4, 1, 2, 2\)"):
        extract_features(lambda x: x, images)
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(lambda x: x.flatten(1), images, batch_size=0)
