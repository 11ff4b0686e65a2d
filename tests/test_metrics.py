"""PSNR and SSIM against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastjoint.metrics import psnr, ssim


def direct_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Window by window: Gaussian-weighted means, variances and covariance (Wang et al. 2004)."""
    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for c in range(a.shape[2]):
        for i in range(a.shape[0] - 10):
            for j in range(a.shape[1] - 10):
                pa, pb = a[i : i + 11, j : j + 11, c], b[i : i + 11, j : j + 11, c]
                ma, mb = (w * pa).sum(), (w * pb).sum()
                va, vb = (w * pa * pa).sum() - ma**2, (w * pb * pb).sum() - mb**2
                cov = (w * pa * pb).sum() - ma * mb
                values.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_psnr_of_a_known_error():
    a = torch.zeros(4, 4, 3)
    b = torch.full((4, 4, 3), 0.1)
    assert psnr(a, b) == pytest.approx(20.0)
    assert math.isinf(psnr(a, a))


def test_ssim_matches_the_windowed_definition():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(16, 18, 3, generator=generator)
    b = (a + 0.2 * torch.randn(16, 18, 3, generator=generator)).clamp(0, 1)
    assert ssim(a, b) == pytest.approx(direct_ssim(a.double().numpy(), b.double().numpy()), rel=1e-9)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, b) < 0.9
