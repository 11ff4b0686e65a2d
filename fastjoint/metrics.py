"""Image metrics: PSNR and SSIM."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


def psnr_from_mse(mse: float) -> float:
    """Peak signal-to-noise ratio in dB of a mean squared error of values in [0, 1]."""
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def psnr(a: Tensor, b: Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1] (any shape)."""
    return psnr_from_mse(torch.mean((a.double() - b.double()) ** 2).item())


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: Tensor, b: Tensor) -> float:
    """Structural similarity of two [H, W, C] images in [0, 1].

    Wang et al. (2004): 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, data
    range 1, over the valid region, averaged over pixels and channels.
    """
    assert a.shape == b.shape and a.dim() == 3, f"two [H, W, C] images expected, got {tuple(a.shape)}, {tuple(b.shape)}"
    c1, c2 = 0.01**2, 0.03**2
    channels = a.shape[2]
    window = _gaussian_window().to(a.device)[None, None].expand(channels, 1, 11, 11)
    x = a.double().permute(2, 0, 1)[None]
    y = b.double().permute(2, 0, 1)[None]

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, window, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (numerator / denominator).mean().item()


class Scores(NamedTuple):
    psnr: float
    ssim: float
    views: int


def score(predictions: list[Tensor], truths: Tensor) -> Scores:
    """Mean PSNR and SSIM over views."""
    p = [psnr(x, y) for x, y in zip(predictions, truths)]
    s = [ssim(x, y) for x, y in zip(predictions, truths)]
    return Scores(sum(p) / len(p), sum(s) / len(s), len(p))
