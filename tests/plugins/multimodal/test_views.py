"""Image views (patches, rows, columns, spectrum) and standardisation against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfsup.plugins.multimodal.views import (
    column_profiles,
    image_views,
    patch_tokens,
    row_profiles,
    spectrum_tokens,
    standardize,
)


def _image() -> torch.Tensor:
    return torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)  # [1, C=2, 4, 4]


def test_patch_tokens_by_hand() -> None:
    tokens = patch_tokens(_image(), 2)
    assert tokens.shape == (1, 4, 8)
    # token 1 = top-right 2x2 patch: channel 0 pixels (0,2),(0,3),(1,2),(1,3) then channel 1's
    assert tokens[0, 1].tolist() == [2, 3, 6, 7, 18, 19, 22, 23]
    padded = patch_tokens(torch.ones(1, 1, 5, 5), 2)  # 5x5 -> padded to 6x6 -> 9 patches
    assert padded.shape == (1, 9, 4) and padded[0, 8].tolist() == [1, 0, 0, 0]


def test_row_and_column_profiles_by_hand() -> None:
    rows, columns = row_profiles(_image()), column_profiles(_image())
    assert rows.shape == columns.shape == (1, 4, 8)
    assert rows[0, 1].tolist() == [4, 5, 6, 7, 20, 21, 22, 23]  # row 1 of channel 0, then channel 1
    assert columns[0, 2].tolist() == [2, 6, 10, 14, 18, 22, 26, 30]  # column 2 of both channels


def test_spectrum_matches_numpy_and_a_constant_image() -> None:
    image = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    tokens = spectrum_tokens(image)
    assert tokens.shape == (3, 8, 5)
    reference = np.log1p(np.abs(np.fft.fftshift(np.fft.rfft2(image.numpy(), norm="ortho"), axes=-2)))[:, 0]
    np.testing.assert_allclose(tokens.numpy(), reference, rtol=1e-5, atol=1e-6)
    constant = spectrum_tokens(torch.full((1, 1, 8, 8), 0.5))
    expected = torch.zeros(8, 5)
    expected[4, 0] = np.log1p(0.5 * 64 / 8)  # only the zero frequency (centred row 4): sum / sqrt(HW)
    torch.testing.assert_close(constant[0], expected, atol=1e-6, rtol=0)


def test_image_views_of_uint8_and_bad_requests() -> None:
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    views = image_views(images, ["rows", "patches"], 2)
    assert list(views) == ["rows", "patches"]
    torch.testing.assert_close(views["rows"], images.float().div(255).view(5, 8, 8))
    with pytest.raises(ValueError, match="subset"):
        image_views(images, ["rows", "pixels"], 2)
    with pytest.raises(ValueError, match="repeat"):
        image_views(images, ["rows", "rows"], 2)


def test_standardize_uses_training_statistics() -> None:
    train = {"a": torch.tensor([[[1.0, 10.0], [3.0, 10.0]]])}  # [1, T=2, F=2]; feature 1 constant
    test = {"a": torch.tensor([[[5.0, 12.0]]])}
    out_train, out_test = standardize(train, test)
    std = torch.tensor([1.0, 3.0]).std().item()  # sample std over (N, T)
    torch.testing.assert_close(out_train["a"], torch.tensor([[[-1 / std, 0.0], [1 / std, 0.0]]]))
    torch.testing.assert_close(out_test["a"][0, 0, 0], torch.tensor(3 / std))
    assert out_test["a"][0, 0, 1].item() == pytest.approx(2.0)  # constant in training: centred only
