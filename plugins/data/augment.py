"""Batch-wise view augmentation on the training device (registry kind ``transform``).

:class:`TwoViewAugment` is the SimCLR-style recipe (random resized crop, flip, colour
jitter, random grayscale, Gaussian blur) done for a whole batch at once, with no loop over
samples:

* crop + flip + optional shift: per-sample scale and shift of each axis, one sampling grid
  (what ``F.affine_grid`` builds, computed per row and per column) and one
  ``F.grid_sample`` (bilinear, ``align_corners=False``) for all views;
* colour jitter: per-sample brightness / contrast / saturation factors broadcast over pixels;
* random grayscale: a per-sample mask;
* Gaussian blur: a separable grouped convolution with one kernel per sample.

Every random number comes from the ``generator`` passed to :meth:`forward` (drawn on the
images' device), so runs are reproducible. Defaults that depend on the data (crop scale,
flip, blur) are resolved from the batch's size and channel count; see
:meth:`TwoViewAugment.resolve`.

Cost: one ``grid_sample`` for all views of a batch; the sampling grid is built per row and
per column rather than by ``F.affine_grid`` (same values, a fraction of the CPU time). Blur
(default above 32 px only) is memory bound on a CPU and meant for the GPU. `selfsup bench
step` reports the augmentation's share of a training step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.interfaces import ViewTransform
from selfsup.errors import ConfigError

#: ITU-R 601 luma weights, as torchvision's ``rgb_to_grayscale``.
LUMA = (0.299, 0.587, 0.114)
#: Candidate crops drawn per sample before the whole-image fallback (as torchvision's 10 tries).
CROP_TRIES = 10


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class AugmentSettings:
    """Fully resolved augmentation parameters for one image size and channel count."""

    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    flip: float
    brightness: float
    contrast: float
    saturation: float
    jitter_prob: float
    grayscale_prob: float
    blur_prob: float
    blur_sigma: tuple[float, float]
    translate: float


def default_crop_scale(size: int) -> tuple[float, float]:
    """Random-resized-crop area range: (0.2, 1) from 32 px, (0.35, 1) below, (0.5, 1) at <= 16 px."""
    if size <= 16:
        return (0.5, 1.0)
    if size < 32:
        return (0.35, 1.0)
    return (0.2, 1.0)


def default_flip(channels: int) -> float:
    """Horizontal flip probability: 0.5 for RGB, 0 for grey (mirrored digits/letters change meaning)."""
    return 0.5 if channels == 3 else 0.0


def default_blur_prob(size: int) -> float:
    """Gaussian blur probability: 0 up to 32 px (blur destroys small images), 0.5 above."""
    return 0.0 if size <= 32 else 0.5


# --------------------------------------------------------------------------- random helpers
def _uniform(
    shape: Sequence[int], low: float, high: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """float32 samples from U[low, high) of ``shape`` on ``device``."""
    u = torch.rand(tuple(shape), generator=generator, device=device)
    return u.mul_(high - low).add_(low)


def _bernoulli(n: int, p: float, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """bool ``[n]``: True with probability ``p``."""
    return torch.rand(n, generator=generator, device=device) < p


# --------------------------------------------------------------------------- geometry
def sample_crop_boxes(
    n: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random resized crop boxes, as torchvision's ``RandomResizedCrop`` but continuous.

    Returns ``(w_frac, h_frac, cx, cy)``, each ``[n]``: the crop's width and height as
    fractions of the image's, and its centre in normalised coordinates (-1..1). Area is
    uniform in ``scale``, aspect ratio log-uniform in ``ratio``; of ``CROP_TRIES`` candidates
    the first that fits is used, else the largest crop whose aspect ratio is in ``ratio``
    (the whole image when its own ratio is in range).
    """
    device = torch.device(device)
    area = _uniform((n, CROP_TRIES), scale[0], scale[1], generator, device)
    log_ratio = _uniform((n, CROP_TRIES), math.log(ratio[0]), math.log(ratio[1]), generator, device)
    aspect = torch.exp(log_ratio)
    w_frac = torch.sqrt(area * aspect * (height / width))
    h_frac = torch.sqrt(area / aspect * (width / height))
    fits = (w_frac <= 1.0) & (h_frac <= 1.0)
    first = fits.int().argmax(dim=1, keepdim=True)  # 0 when nothing fits
    found = fits.any(dim=1)
    fallback_w, fallback_h = _fallback_crop(ratio, height, width)
    w_frac = torch.where(found, w_frac.gather(1, first).squeeze(1), fallback_w)
    h_frac = torch.where(found, h_frac.gather(1, first).squeeze(1), fallback_h)
    centre = _uniform((2, n), -1.0, 1.0, generator, device)
    cx = centre[0] * (1.0 - w_frac)
    cy = centre[1] * (1.0 - h_frac)
    return w_frac, h_frac, cx, cy


def _fallback_crop(ratio: tuple[float, float], height: int, width: int) -> tuple[float, float]:
    """``(w_frac, h_frac)`` of torchvision's fallback: the whole image, ratio clamped into range."""
    image_ratio = width / height
    if image_ratio < ratio[0]:
        return 1.0, image_ratio / ratio[0]
    if image_ratio > ratio[1]:
        return ratio[1] / image_ratio, 1.0
    return 1.0, 1.0


def crop_grid(scale_x: Tensor, shift_x: Tensor, scale_y: Tensor, shift_y: Tensor, height: int, width: int) -> Tensor:
    """Sampling grid ``[N, H, W, 2]`` of crops, each argument ``[N]`` (normalised coordinates).

    ``x_in = scale_x * x_out + shift_x`` and ``y_in = scale_y * y_out + shift_y``: what
    ``F.affine_grid(theta, [N, C, H, W], align_corners=False)`` builds for
    ``theta = [[scale_x, 0, shift_x], [0, scale_y, shift_y]]`` (a negative ``scale_x``
    mirrors the crop). A crop has no rotation or shear, so x depends on the column only and
    y on the row only: each is computed once per image and broadcast, instead of
    ``F.affine_grid``'s batched matmul with an inner size of 3, which dominates the CPU time
    of a small-image augmentation.
    """
    xs = torch.arange(width, device=scale_x.device, dtype=scale_x.dtype).mul_(2.0).add_(1.0).div_(width).sub_(1.0)
    ys = torch.arange(height, device=scale_y.device, dtype=scale_y.dtype).mul_(2.0).add_(1.0).div_(height).sub_(1.0)
    grid = torch.empty((scale_x.shape[0], height, width, 2), device=scale_x.device, dtype=scale_x.dtype)
    grid[..., 0] = torch.addcmul(shift_x[:, None], scale_x[:, None], xs)[:, None, :]  # [N, 1, W]
    grid[..., 1] = torch.addcmul(shift_y[:, None], scale_y[:, None], ys)[:, :, None]  # [N, H, 1]
    return grid


def warp_crops(images: Tensor, scale_x: Tensor, shift_x: Tensor, scale_y: Tensor, shift_y: Tensor,
               out_size: tuple[int, int] | None = None) -> Tensor:
    """Resample ``images`` ``[N, C, H, W]`` through the crops of :func:`crop_grid` -> ``[N, C, H', W']``
    (``out_size`` = (H', W'), default the input's size).

    One grid and one ``F.grid_sample`` (bilinear, zero padding, ``align_corners=False``)
    for the whole batch.
    """
    dtype = images.dtype
    height, width = out_size or images.shape[2:]
    grid = crop_grid(scale_x.to(dtype), shift_x.to(dtype), scale_y.to(dtype), shift_y.to(dtype), height, width)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# --------------------------------------------------------------------------- colour
def grayscale(images: Tensor) -> Tensor:
    """Luma ``[N, 1, H, W]`` of RGB ``[N, 3, H, W]`` (grey input is returned as is)."""
    if images.shape[1] != 3:
        return images
    r, g, b = images.unbind(dim=1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def _mean_luma(images: Tensor) -> Tensor:
    """Mean luma ``[N]`` of ``[N, C, H, W]`` (the luma of the per-channel means, one pass)."""
    channel_means = images.mean(dim=(2, 3))  # [N, C]
    if images.shape[1] != 3:
        return channel_means.mean(dim=1)
    return channel_means @ channel_means.new_tensor(LUMA)


def _per_sample(values: Tensor) -> Tensor:
    """``[N]`` -> ``[N, 1, 1, 1]`` for broadcasting over ``[N, C, H, W]``."""
    return values.view(-1, 1, 1, 1)


def _jitter_factors(strength: float, apply: Tensor, generator: torch.Generator | None) -> Tensor:
    """Factors ``[N]`` uniform in ``[max(0, 1 - strength), 1 + strength]``, 1 where not applied."""
    factors = _uniform(apply.shape, max(0.0, 1.0 - strength), 1.0 + strength, generator, apply.device)
    return torch.where(apply, factors, torch.ones_like(factors))


def color_jitter(
    images: Tensor,
    brightness: Tensor | None = None,
    contrast: Tensor | None = None,
    saturation: Tensor | None = None,
    inplace: bool = False,
) -> Tensor:
    """Per-sample colour jitter of ``[N, C, H, W]`` in [0, 1], factors ``[N]`` (1 = unchanged).

    Brightness multiplies, contrast blends with the image's mean luma, saturation blends with
    the per-pixel luma (RGB only); applied in that order, clamping after each as torchvision.
    ``inplace`` overwrites ``images`` (saves allocations when the caller owns the tensor).
    """
    x = images if inplace else images.clone()
    if brightness is not None:
        x.mul_(_per_sample(brightness.to(x.dtype))).clamp_(0.0, 1.0)
    if contrast is not None:  # x * c + (1 - c) * mean: lerp_ with per-sample weights is slower on CPU
        factor = _per_sample(contrast.to(x.dtype))
        x.mul_(factor).add_(_per_sample(_mean_luma(x)) * (1.0 - factor)).clamp_(0.0, 1.0)
    if saturation is not None and x.shape[1] == 3:
        x.lerp_(grayscale(x), 1.0 - _per_sample(saturation.to(x.dtype))).clamp_(0.0, 1.0)
    return x


def random_grayscale(images: Tensor, apply: Tensor) -> Tensor:
    """Replace RGB images where ``apply`` (bool ``[N]``) by their luma on all three channels."""
    if images.shape[1] != 3:
        return images
    return torch.where(_per_sample(apply), grayscale(images).expand_as(images), images)


# --------------------------------------------------------------------------- blur
def gaussian_kernels(sigma: Tensor, radius: int) -> Tensor:
    """Normalised 1-D Gaussian kernels ``[N, 2*radius+1]`` for per-sample ``sigma`` ``[N]``."""
    taps = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    weights = torch.exp(-(taps**2) / (2.0 * sigma.clamp(min=1e-6).unsqueeze(1) ** 2))
    return weights / weights.sum(dim=1, keepdim=True)


def gaussian_blur(images: Tensor, kernels: Tensor) -> Tensor:
    """Separable blur of ``[N, C, H, W]`` with one kernel ``[N, K]`` per sample (reflect padding).

    The batch is viewed as ``[1, N*C, H, W]`` and convolved twice (rows, then columns) with
    groups = N*C.
    """
    n, c, h, w = images.shape
    k = kernels.shape[1]
    radius = k // 2
    weight = kernels.to(images.dtype).repeat_interleave(c, dim=0)  # [N*C, K]
    x = images.reshape(1, n * c, h, w)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), weight.view(n * c, 1, 1, k), groups=n * c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), weight.view(n * c, 1, k, 1), groups=n * c)
    return x.view(n, c, h, w)


def blur_radius(sigma_max: float, height: int, width: int) -> int:
    """Kernel radius ``ceil(3 * sigma_max)``, at most what reflect padding allows."""
    return max(0, min(math.ceil(3.0 * sigma_max), height - 1, width - 1))


# --------------------------------------------------------------------------- validation
def _pair(name: str, value: Sequence[float], low: float, high: float | None = None) -> tuple[float, float]:
    """``(a, b)`` with ``low < a <= b (<= high)``, from a tuple or a YAML list, else ConfigError."""
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair [low, high], got {value!r}.") from None
    if not (low < a <= b and (high is None or b <= high)):
        bound = f" <= {high:g}" if high is not None else ""
        raise ConfigError(f"{name} must satisfy {low:g} < low <= high{bound}, got {value!r}.")
    return (a, b)


def _probability(name: str, value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}.")
    return float(value)


def _non_negative(name: str, value: float) -> float:
    if float(value) < 0.0:
        raise ConfigError(f"{name} must be >= 0, got {value!r}.")
    return float(value)


def _as_float_images(images: Tensor) -> Tensor:
    """Float ``[N, C, H, W]`` in [0, 1]; uint8 input is divided by 255."""
    if images.dim() != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images if images.is_floating_point() else images.float()


# --------------------------------------------------------------------------- transforms
class TwoViewAugment(ViewTransform):
    """Random resized crop, flip, colour jitter, grayscale and blur, batch-wise on the device.

    Parameters left as None get defaults from the batch: ``crop_scale`` (0.2, 1) for >= 32 px,
    (0.35, 1) below 32 px, (0.5, 1) at <= 16 px; ``flip`` 0.5 for RGB, 0 for grey;
    ``blur_prob`` 0 up to 32 px, 0.5 above. Saturation and grayscale act on RGB only.
    ``translate`` adds a uniform shift of up to that fraction of the image (zero padded).
    """

    def __init__(
        self,
        crop_scale: tuple[float, float] | None = None,
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: float | None = None,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        jitter_prob: float = 0.8,
        grayscale_prob: float = 0.2,
        blur_prob: float | None = None,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        translate: float = 0.0,
    ) -> None:
        super().__init__()
        self.crop_scale = None if crop_scale is None else _pair("crop_scale", crop_scale, 0.0, 1.0)
        self.crop_ratio = _pair("crop_ratio", crop_ratio, 0.0)
        self.flip = None if flip is None else _probability("flip", flip)
        self.brightness = _non_negative("brightness", brightness)
        self.contrast = _non_negative("contrast", contrast)
        self.saturation = _non_negative("saturation", saturation)
        self.jitter_prob = _probability("jitter_prob", jitter_prob)
        self.grayscale_prob = _probability("grayscale_prob", grayscale_prob)
        self.blur_prob = None if blur_prob is None else _probability("blur_prob", blur_prob)
        self.blur_sigma = _pair("blur_sigma", blur_sigma, 0.0)
        if not 0.0 <= float(translate) <= 1.0:
            raise ConfigError(f"translate must be a fraction of the image size in [0, 1], got {translate!r}.")
        self.translate = float(translate)

    def resolve(self, channels: int, height: int, width: int) -> AugmentSettings:
        """The settings used for ``[*, channels, height, width]`` batches (None -> size defaults)."""
        size = min(height, width)
        return AugmentSettings(
            crop_scale=self.crop_scale if self.crop_scale is not None else default_crop_scale(size),
            crop_ratio=self.crop_ratio,
            flip=self.flip if self.flip is not None else default_flip(channels),
            brightness=self.brightness,
            contrast=self.contrast,
            saturation=self.saturation if channels == 3 else 0.0,
            jitter_prob=self.jitter_prob,
            grayscale_prob=self.grayscale_prob if channels == 3 else 0.0,
            blur_prob=self.blur_prob if self.blur_prob is not None else default_blur_prob(size),
            blur_sigma=self.blur_sigma,
            translate=self.translate,
        )

    def forward(self, images: Tensor, num_views: int = 2, generator: torch.Generator | None = None) -> list[Tensor]:
        """images ``[N, C, H, W]`` float in [0, 1] -> ``num_views`` independent views ``[N, C, H, W]``."""
        x = _as_float_images(images)
        n, c, h, w = x.shape
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        if n == 0:
            return [x.clone() for _ in range(num_views)]
        settings = self.resolve(c, h, w)
        batch = x.repeat(num_views, 1, 1, 1)  # all views in one pass: [V*N, C, H, W]
        out = augment_batch(batch, settings, generator)
        return list(out.split(n, dim=0))

    def extra_repr(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_") and k != "training")
        return fields


def augment_batch(x: Tensor, s: AugmentSettings, generator: torch.Generator | None = None,
                  out_size: tuple[int, int] | None = None) -> Tensor:
    """Augment every image of ``x`` ``[N, C, H, W]`` independently with settings ``s``; in [0, 1].
    The crops are resampled to ``out_size`` (default: the input's size)."""
    n = x.shape[0]
    device = x.device
    x = _geometry(x, s, generator, out_size)
    h, w = x.shape[2:]
    if s.jitter_prob > 0 and (s.brightness > 0 or s.contrast > 0 or s.saturation > 0):
        apply = _bernoulli(n, s.jitter_prob, generator, device)
        x = color_jitter(
            x,
            brightness=_jitter_factors(s.brightness, apply, generator) if s.brightness > 0 else None,
            contrast=_jitter_factors(s.contrast, apply, generator) if s.contrast > 0 else None,
            saturation=_jitter_factors(s.saturation, apply, generator) if s.saturation > 0 else None,
            inplace=True,  # x is the fresh output of grid_sample
        )
    if s.grayscale_prob > 0:
        x = random_grayscale(x, _bernoulli(n, s.grayscale_prob, generator, device))
    radius = blur_radius(s.blur_sigma[1], h, w)
    if s.blur_prob > 0 and radius > 0:
        apply = _bernoulli(n, s.blur_prob, generator, device)
        sigma = _uniform((n,), s.blur_sigma[0], s.blur_sigma[1], generator, device)
        kernels = gaussian_kernels(sigma, radius)
        identity = torch.zeros_like(kernels)
        identity[:, radius] = 1.0
        x = gaussian_blur(x, torch.where(apply.unsqueeze(1), kernels, identity))
    return x.clamp_(0.0, 1.0)


def _geometry(x: Tensor, s: AugmentSettings, generator: torch.Generator | None,
              out_size: tuple[int, int] | None = None) -> Tensor:
    """Random resized crop + flip + shift of ``[N, C, H, W]`` through one ``grid_sample``."""
    n, _, h, w = x.shape
    device = x.device
    w_frac, h_frac, cx, cy = sample_crop_boxes(n, s.crop_scale, s.crop_ratio, h, w, generator, device)
    if s.translate > 0:
        shift = _uniform((2, n), -2.0 * s.translate, 2.0 * s.translate, generator, device)
        cx, cy = cx + shift[0], cy + shift[1]
    if s.flip > 0:  # a negative x scale mirrors the crop left-right
        w_frac = torch.where(_bernoulli(n, s.flip, generator, device), -w_frac, w_frac)
    return warp_crops(x, w_frac, cx, h_frac, cy, out_size)


def default_local_size(size: int) -> int:
    """Side of a local crop: DINO's 96 / 224 of the image side, at least 4 px."""
    return max(4, round(size * 96 / 224))


class MultiCropAugment(TwoViewAugment):
    """Multi-crop (SwAV, DINO): ``global_crops`` views at the image size, then local crops.

    A call for ``num_views`` views returns ``global_crops`` global views ``[N, C, H, W]`` (crop
    area ``global_scale``) followed by ``num_views - global_crops`` local views ``[N, C, s, s]``
    (``local_size`` s, crop area ``local_scale``), each group made batch-wise in one pass as
    ``two_view`` does; every other parameter is ``two_view``'s. Defaults: global (0.4, 1) and
    local (0.05, 0.4) of the area as in DINO, local side 96/224 of the image side. The
    objective asks for the total; objectives that know global from local (DINO) read the
    first ``global_crops`` views as the global ones.
    """

    def __init__(
        self,
        global_crops: int = 2,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        local_size: int | None = None,
        **two_view: Any,
    ) -> None:
        if "crop_scale" in two_view:
            raise ConfigError("crop_scale: multi_crop takes global_scale and local_scale instead.")
        super().__init__(**two_view)
        if global_crops < 1:
            raise ConfigError(f"global_crops must be >= 1, got {global_crops}.")
        if local_size is not None and local_size < 1:
            raise ConfigError(f"local_size must be a positive number of pixels, got {local_size}.")
        self.global_crops = int(global_crops)
        self.global_scale = _pair("global_scale", global_scale, 0.0, 1.0)
        self.local_scale = _pair("local_scale", local_scale, 0.0, 1.0)
        self.local_size = local_size

    def forward(self, images: Tensor, num_views: int = 2, generator: torch.Generator | None = None) -> list[Tensor]:
        """images ``[N, C, H, W]`` in [0, 1] -> ``global_crops`` global then the local views."""
        x = _as_float_images(images)
        n, c, h, w = x.shape
        if num_views < self.global_crops:
            raise ValueError(f"multi_crop makes {self.global_crops} global crops, but {num_views} views were asked for")
        settings = self.resolve(c, h, w)
        views = augment_batch(x.repeat(self.global_crops, 1, 1, 1),
                              dataclasses.replace(settings, crop_scale=self.global_scale), generator)
        out = list(views.split(n, dim=0))
        local = num_views - self.global_crops
        if local > 0:
            side = self.local_size or default_local_size(min(h, w))
            views = augment_batch(x.repeat(local, 1, 1, 1), dataclasses.replace(settings, crop_scale=self.local_scale),
                                  generator, out_size=(side, side))
            out += list(views.split(n, dim=0))
        return out


class IdentityViews(ViewTransform):
    """No augmentation: every view is the unchanged batch (for supervised objectives)."""

    def forward(self, images: Tensor, num_views: int = 1, generator: torch.Generator | None = None) -> list[Tensor]:
        """images ``[N, C, H, W]`` -> ``num_views`` references to the same float ``[N, C, H, W]``."""
        x = _as_float_images(images)
        return [x for _ in range(num_views)]
