"""Batch-wise view augmentation: shapes, determinism, exact geometry, colour ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.errors import ConfigError
from selfsup.plugins.data import register
from selfsup.plugins.data.augment import (
    IdentityViews,
    TwoViewAugment,
    crop_grid,
    gaussian_blur,
    gaussian_kernels,
    random_grayscale,
    sample_crop_boxes,
    warp_crops,
)
from selfsup.registry import Registry

NO_RANDOM_CHANGE = dict(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    flip=0.0,
    jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registered_transforms() -> None:
    registry = Registry()
    register(registry)
    assert registry.names("transform") == ["identity", "multi_crop", "two_view"]
    assert isinstance(registry.create("transform", "two_view", crop_scale=[0.3, 1.0]), TwoViewAugment)


@pytest.mark.parametrize("shape", [(16, 1, 8, 8), (16, 1, 28, 28), (8, 3, 32, 32), (4, 3, 40, 48)])
def test_views_shape_range_and_independence(shape: tuple[int, ...]) -> None:
    x = torch.rand(shape, generator=_gen(1))
    views = TwoViewAugment(blur_prob=0.5, translate=0.1)(x, num_views=3, generator=_gen())
    assert len(views) == 3
    for view in views:
        assert view.shape == x.shape and view.dtype == torch.float32
        assert float(view.min()) >= 0.0 and float(view.max()) <= 1.0
    assert not torch.allclose(views[0], views[1])


def test_same_generator_seed_gives_same_views() -> None:
    x = torch.rand(8, 3, 32, 32, generator=_gen(1))
    aug = TwoViewAugment(blur_prob=0.5)
    a, b = aug(x, 2, _gen(7)), aug(x, 2, _gen(7))
    c = aug(x, 2, _gen(8))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("shape", [(6, 3, 12, 12), (4, 1, 7, 9)])
def test_no_random_change_is_identity(shape: tuple[int, ...]) -> None:
    # A non-square image has no area-1 crop of another ratio: the fallback (whole image, its
    # ratio 9/7 being inside crop_ratio) is used.
    x = torch.rand(shape, generator=_gen(1))
    settings = {**NO_RANDOM_CHANGE, "crop_ratio": (0.5, 2.0)}
    for view in TwoViewAugment(**settings)(x, 2, _gen()):
        assert torch.allclose(view, x, atol=1e-5)


def test_flip_one_mirrors_exactly() -> None:
    x = torch.rand(5, 1, 7, 9, generator=_gen(1))
    settings = {**NO_RANDOM_CHANGE, "flip": 1.0, "crop_ratio": (0.5, 2.0)}
    (view,) = TwoViewAugment(**settings)(x, 1, _gen())
    assert torch.allclose(view, x.flip(-1), atol=1e-5)
    # Square crops of a non-square image (ratio 1 forced) take the centre-ish 7x7 part.
    (square,) = TwoViewAugment(**NO_RANDOM_CHANGE)(x, 1, _gen())
    assert not torch.allclose(square, x, atol=1e-3)


def _crop_theta(scale_x: torch.Tensor, shift_x: torch.Tensor, scale_y: torch.Tensor, shift_y: torch.Tensor):
    """The affine matrices ``[N, 2, 3]`` of crops, for torch's own ``F.affine_grid``."""
    zero = torch.zeros_like(scale_x)
    return torch.stack([torch.stack([scale_x, zero, shift_x], 1), torch.stack([zero, scale_y, shift_y], 1)], 1)


def test_known_matrix_crops_the_centre_region() -> None:
    # A 4x4 ramp whose value is linear in (row, col), so bilinear sampling is exact.
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    image = ((4 * rows + cols) / 15).view(1, 1, 4, 4)
    # Area 0.25, centred: the crop spans pixels 1..3 in each direction (the centre 2x2 region).
    half, zero = torch.tensor([0.5]), torch.zeros(1)
    theta = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]])
    assert torch.allclose(crop_grid(half, zero, half, zero, 4, 4), F.affine_grid(theta, [1, 1, 4, 4], align_corners=False))
    out = warp_crops(image, half, zero, half, zero)
    # Output pixel i has centre -0.75 + 0.5 i (normalised); it reads input pixel coordinate
    # ((0.5 * x + 1) * 4 - 1) / 2 = 0.75, 1.25, 1.75, 2.25: the centre region upsampled x2.
    coords = torch.tensor([0.75, 1.25, 1.75, 2.25])
    expected = (4 * coords.view(4, 1) + coords.view(1, 4)) / 15
    assert torch.allclose(out[0, 0], expected, atol=1e-6)


def test_crop_boxes_fit_inside_the_image() -> None:
    w_frac, h_frac, cx, cy = sample_crop_boxes(1000, (0.08, 1.0), (0.5, 2.0), 20, 30, _gen())
    assert float(w_frac.max()) <= 1.0 and float(h_frac.max()) <= 1.0
    assert bool(((cx.abs() + w_frac) <= 1.0 + 1e-6).all()) and bool(((cy.abs() + h_frac) <= 1.0 + 1e-6).all())
    area = w_frac * h_frac
    assert float(area.min()) >= 0.08 - 1e-5 and float(area.max()) <= 1.0 + 1e-5
    # Matches torch's own affine_grid + grid_sample for the same crops (the first one mirrored).
    scale_x = w_frac[:3] * torch.tensor([-1.0, 1.0, 1.0])
    ramp = torch.linspace(0, 1, 3 * 25).view(3, 1, 5, 5)
    grid = F.affine_grid(_crop_theta(scale_x, cx[:3], h_frac[:3], cy[:3]), [3, 1, 5, 5], align_corners=False)
    out = warp_crops(ramp, scale_x, cx[:3], h_frac[:3], cy[:3])
    assert torch.allclose(out, F.grid_sample(ramp, grid, align_corners=False), atol=1e-6)


def test_crop_grid_is_torchs_affine_grid_of_the_crop_matrices() -> None:
    w_frac, h_frac, cx, cy = sample_crop_boxes(6, (0.2, 1.0), (0.5, 2.0), 7, 9, _gen(5))
    cx = cx + 0.5  # shifted partly off the image
    scale_x = torch.where(torch.tensor([True, False, True, False, False, True]), -w_frac, w_frac)  # mirrored
    for height, width in [(7, 9), (1, 3)]:
        expected = F.affine_grid(_crop_theta(scale_x, cx, h_frac, cy), [6, 1, height, width], align_corners=False)
        grid = crop_grid(scale_x, cx, h_frac, cy, height, width)
        assert grid.shape == (6, height, width, 2) and torch.allclose(grid, expected, atol=1e-6)


def test_grayscale_makes_equal_channels() -> None:
    x = torch.rand(4, 3, 8, 8, generator=_gen(1))
    out = random_grayscale(x, torch.tensor([True, False, True, False]))
    assert torch.allclose(out[0, 0], out[0, 1]) and torch.allclose(out[0, 1], out[0, 2])
    assert torch.equal(out[1], x[1])
    settings = {**NO_RANDOM_CHANGE, "grayscale_prob": 1.0}
    (view,) = TwoViewAugment(**settings)(x, 1, _gen())
    assert torch.allclose(view[:, 0], view[:, 1], atol=1e-6) and torch.allclose(view[:, 1], view[:, 2], atol=1e-6)


def test_blur_keeps_constant_images_and_smooths_noise() -> None:
    constant = torch.full((2, 3, 9, 9), 0.3)
    kernels = gaussian_kernels(torch.tensor([0.5, 2.0]), radius=3)
    assert torch.allclose(kernels.sum(1), torch.ones(2))
    assert torch.allclose(gaussian_blur(constant, kernels), constant, atol=1e-6)
    noise = torch.rand(2, 1, 16, 16, generator=_gen(1))
    blurred = gaussian_blur(noise, kernels)
    assert float(blurred[1].std()) < float(blurred[0].std()) < float(noise.std())


def test_jitter_changes_values_but_grey_stays_grey() -> None:
    x = torch.rand(8, 1, 10, 10, generator=_gen(1))
    aug = TwoViewAugment(**{**NO_RANDOM_CHANGE, "jitter_prob": 1.0})
    (view,) = aug(x, 1, _gen())
    assert view.shape == x.shape and not torch.allclose(view, x)
    settings = aug.resolve(1, 10, 10)
    assert settings.saturation == 0.0 and settings.grayscale_prob == 0.0 and settings.flip == 0.0


def test_size_dependent_defaults() -> None:
    aug = TwoViewAugment()
    assert aug.resolve(1, 8, 8).crop_scale == (0.5, 1.0)
    assert aug.resolve(1, 28, 28).crop_scale == (0.35, 1.0)
    rgb = aug.resolve(3, 32, 32)
    assert rgb.crop_scale == (0.2, 1.0) and rgb.flip == 0.5 and rgb.blur_prob == 0.0
    assert aug.resolve(3, 96, 96).blur_prob == 0.5


def test_bad_parameters_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="crop_scale"):
        TwoViewAugment(crop_scale=(0.9, 0.2))
    with pytest.raises(ConfigError, match="jitter_prob"):
        TwoViewAugment(jitter_prob=1.5)


def test_identity_views_are_the_batch() -> None:
    x = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8)
    views = IdentityViews()(x, 2)
    assert len(views) == 2 and all(torch.equal(v, x.float() / 255) for v in views)
