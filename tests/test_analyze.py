"""The feature-space diagnostics: closed-form KL divergence and `fastjoint analyze`."""

from __future__ import annotations

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from conftest import run_cli
from fastjoint.analyze import Gaussian, fit_gaussian, kl_divergence


def gaussian(mean, cov) -> Gaussian:
    return Gaussian(torch.tensor(mean, dtype=torch.float64), torch.tensor(cov, dtype=torch.float64))


def test_kl_of_identical_distributions_is_zero():
    p = gaussian([0.3, -0.2], [[0.5, 0.1], [0.1, 0.2]])
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)


def test_kl_of_a_shifted_mean_is_half_the_mahalanobis_distance():
    cov = [[0.5, 0.1], [0.1, 0.2]]
    p, q = gaussian([0.0, 0.0], cov), gaussian([0.3, -0.4], cov)
    delta = np.array([0.3, -0.4])
    expected = 0.5 * delta @ np.linalg.inv(np.array(cov)) @ delta
    assert kl_divergence(p, q) == pytest.approx(expected, rel=1e-12)
    assert kl_divergence(q, p) == pytest.approx(expected, rel=1e-12)  # symmetric for equal covariances


def test_kl_of_a_scaled_covariance():
    s = 0.5
    p, q = gaussian([0.0, 0.0], [[s * s, 0.0], [0.0, s * s]]), gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]])
    assert kl_divergence(p, q) == pytest.approx(s * s - 1 - 2 * math.log(s), rel=1e-12)
    assert kl_divergence(q, p) != pytest.approx(kl_divergence(p, q))  # KL is not symmetric


def test_fit_matches_numpy():
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(500, 2, generator=generator) @ torch.tensor([[1.0, 0.4], [0.0, 0.3]]) + torch.tensor([0.2, -0.1])
    fit = fit_gaussian(points)
    np.testing.assert_allclose(fit.mean.numpy(), points.double().mean(0).numpy())
    np.testing.assert_allclose(fit.cov.numpy(), np.cov(points.double().numpy().T) + 1e-6 * np.eye(2), rtol=1e-10)


@pytest.mark.slow  # the session's trained run, and the CLI
def test_analyze_writes_pictures_and_json(trained_run):
    run_dir, _, _ = trained_run
    result = run_cli("analyze", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "KL(target || reference)" in result.stdout
    analysis = json.loads((run_dir / "analysis.json").read_text())
    assert analysis["points"]["target"] > 100 and analysis["points"]["reference"] > 100
    assert math.isfinite(analysis["kl"]["target||reference"]) and analysis["kl"]["target||reference"] >= 0
    decoders = iio.imread(run_dir / "analysis" / "decoders.png")
    features = iio.imread(run_dir / "analysis" / "features.png")
    assert decoders.shape == features.shape == (16 + 256, 2 * 256 + 8, 3)  # titled panels
    # The two decoders differ where the styles differ: the maps are not the same picture.
    assert np.abs(decoders[16:, :256].astype(int) - decoders[16:, 264:].astype(int)).mean() > 1.0
