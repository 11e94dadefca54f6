"""Radiograph-suited augmentations on batches of crops ``(B, 1, S, S)`` in [0, 1].

Intensity (brightness, contrast, gamma), Gaussian blur, Gaussian noise and a small
scale / translate / rotate jitter, each drawn per sample. Never a horizontal (or vertical)
flip: laterality is the patient's, and a mirrored right lung would look like a left lung.
Box jitter happens earlier, on the :class:`~regionmir.regions.Box`, before cropping
(see :mod:`regionmir.train.data`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation; ``p_*`` are per-sample probabilities."""

    scale: float = 0.08  # zoom factor drawn from [1 - scale, 1 + scale], same on both axes
    translate: float = 0.06  # shift as a fraction of the crop side
    rotate_deg: float = 5.0  # small rotation either way (a tilted patient, not a mirror)
    brightness: float = 0.1  # additive shift
    contrast: float = 0.25  # multiplicative factor around the crop mean, [1 - c, 1 + c]
    gamma: float = 0.3  # exp(uniform(-g, g))
    p_blur: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 1.2)  # pixels
    p_noise: float = 0.5
    noise_std: float = 0.03


LIGHT = AugmentConfig(scale=0.04, translate=0.03, rotate_deg=3.0, brightness=0.05,
                      contrast=0.1, gamma=0.15, p_blur=0.1, p_noise=0.3, noise_std=0.02)


def _uniform(n: int, lo: float, hi: float, like: torch.Tensor) -> torch.Tensor:
    return torch.empty(n, device=like.device, dtype=like.dtype).uniform_(lo, hi)


def geometric(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Per-sample zoom, shift and small rotation with bilinear sampling; zeros outside.

    The affine matrix is ``s * R(theta)`` with ``s > 0``, whose determinant is positive, so
    no draw can mirror the crop.
    """
    b = x.shape[0]
    s = _uniform(b, 1 - cfg.scale, 1 + cfg.scale, x)  # (B,)
    t = math.radians(cfg.rotate_deg)
    th = _uniform(b, -t, t, x)  # (B,)
    tx, ty = (_uniform(b, -2 * cfg.translate, 2 * cfg.translate, x) for _ in range(2))
    cos, sin = torch.cos(th) / s, torch.sin(th) / s  # sampling grid = inverse transform
    theta = torch.stack([
        torch.stack([cos, -sin, tx], dim=1),
        torch.stack([sin, cos, ty], dim=1),
    ], dim=1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, S, S, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def intensity(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Per-sample gamma, contrast around the mean, and brightness; result clipped to [0, 1]."""
    b = x.shape[0]
    shape = (b, 1, 1, 1)
    gamma = torch.exp(_uniform(b, -cfg.gamma, cfg.gamma, x)).view(shape)
    x = x.clamp(1e-6, 1.0) ** gamma
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    c = _uniform(b, 1 - cfg.contrast, 1 + cfg.contrast, x).view(shape)
    shift = _uniform(b, -cfg.brightness, cfg.brightness, x).view(shape)
    return ((x - mean) * c + mean + shift).clamp(0.0, 1.0)


def blur(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Gaussian blur with a per-sample sigma on a random subset (probability ``p_blur``)."""
    b = x.shape[0]
    sigma = _uniform(b, *cfg.blur_sigma, x)  # (B,)
    radius = int(math.ceil(2 * cfg.blur_sigma[1]))
    offs = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)  # (K,)
    k = torch.exp(-0.5 * (offs[None] / sigma[:, None]) ** 2)
    k = k / k.sum(dim=1, keepdim=True)  # (B, K)
    # Depthwise trick: treat samples as channels so each gets its own kernel.
    y = x.transpose(0, 1)  # (1, B, S, S)
    y = F.pad(y, (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, k[:, None, None, :], groups=b)  # horizontal pass, kernel (B, 1, 1, K)
    y = F.conv2d(y, k[:, None, :, None], groups=b)  # vertical pass, kernel (B, 1, K, 1)
    y = y.transpose(0, 1)  # (B, 1, S, S)
    pick = (torch.rand(b, device=x.device) < cfg.p_blur).view(b, 1, 1, 1)
    return torch.where(pick, y, x)


def noise(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Additive Gaussian noise on a random subset (probability ``p_noise``), clipped to [0, 1]."""
    b = x.shape[0]
    pick = (torch.rand(b, device=x.device) < cfg.p_noise).to(x.dtype).view(b, 1, 1, 1)
    return (x + pick * cfg.noise_std * torch.randn_like(x)).clamp(0.0, 1.0)


@dataclass(frozen=True)
class DomainConfig:
    """Domain randomization: the processing looks of real films that phantoms lack.

    Each sample gets a random tone curve (a window/level sigmoid and a wide gamma), a partial
    histogram equalization, an unsharp mask, and sometimes inverted local contrast of the window,
    so the encoder cannot rely on one detector's grey levels.
    """

    p: float = 0.8  # probability that a sample is re-processed at all
    gamma: float = 0.7  # exp(uniform(-g, g))
    window: tuple[float, float] = (0.5, 1.6)  # sigmoid window width as a multiple of the crop's spread
    p_equalize: float = 0.4
    p_sharpen: float = 0.4
    sharpen: tuple[float, float] = (0.3, 1.5)  # unsharp-mask gain


def _equalize(x: torch.Tensor, bins: int = 64) -> torch.Tensor:
    """Per-sample histogram equalization of [0, 1] crops: each pixel -> the share of its crop's
    pixels in its intensity bin or below (a ``bins``-step cumulative histogram; O(pixels))."""
    b = x.shape[0]
    idx = (x.reshape(b, -1).clamp(0, 1) * (bins - 1)).round().long()  # (B, S*S)
    counts = torch.zeros(b, bins, device=x.device, dtype=x.dtype).scatter_add_(1, idx, torch.ones_like(idx, dtype=x.dtype))
    cdf = counts.cumsum(dim=1) / idx.shape[1]  # (B, bins)
    return cdf.gather(1, idx).reshape(x.shape)


def domain(x: torch.Tensor, cfg: DomainConfig = DomainConfig()) -> torch.Tensor:
    """Random processing look per sample of ``(B, 1, S, S)`` in [0, 1] (no geometric change)."""
    b = x.shape[0]
    shape = (b, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    spread = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(0.02)  # (B, 1, 1, 1)
    width = spread * _uniform(b, *cfg.window, x).view(shape)
    centre = mean + spread * _uniform(b, -0.7, 0.7, x).view(shape)
    y = torch.sigmoid((x - centre) / width)  # window / level as a soft tone curve
    lo, hi = y.amin(dim=(1, 2, 3), keepdim=True), y.amax(dim=(1, 2, 3), keepdim=True)
    y = ((y - lo) / (hi - lo).clamp_min(1e-4)).clamp(1e-6, 1) ** torch.exp(_uniform(b, -cfg.gamma, cfg.gamma, x)).view(shape)
    eq = (torch.rand(b, device=x.device) < cfg.p_equalize).view(shape)
    y = torch.where(eq, 0.5 * y + 0.5 * _equalize(y), y)
    soft = blur(y, AugmentConfig(p_blur=1.0, blur_sigma=(1.0, 2.0)))
    gain = _uniform(b, *cfg.sharpen, x).view(shape) * (torch.rand(b, device=x.device) < cfg.p_sharpen).view(shape)
    y = (y + gain * (y - soft)).clamp(0.0, 1.0)
    pick = (torch.rand(b, device=x.device) < cfg.p).view(shape)
    return torch.where(pick, y, x)


def augment(x: torch.Tensor, cfg: AugmentConfig = AugmentConfig(), dom: DomainConfig | None = None) -> torch.Tensor:
    """Random radiograph augmentation of a batch ``(B, 1, S, S)`` in [0, 1]; no flips.

    With ``dom``, the processing look is randomized too (domain randomization, before noise).
    """
    x = intensity(geometric(x, cfg), cfg)
    if dom is not None:
        x = domain(x, dom)
    return noise(blur(x, cfg), cfg)


def to_input(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """[0, 1] crops ``(B, 1, S, S)`` -> encoder input, the torch twin of ``regions.normalize``."""
    return (x - mean) / std
