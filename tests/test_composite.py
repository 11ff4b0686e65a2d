"""Compositing against a per-ray Python loop, values and gradients."""

from __future__ import annotations

import pytest
import torch

from fastjoint.ops import composite
from fastjoint.ops._torch_impl import _composite


def loop_composite(sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays):
    """Front to back, one sample at a time: T *= 1 - alpha."""
    rgb, opacity, depth = [], [], []
    for r in range(n_rays):
        c = torch.zeros(3, dtype=sigmas.dtype)
        o = torch.zeros((), dtype=sigmas.dtype)
        z = torch.zeros((), dtype=sigmas.dtype)
        transmittance = torch.ones((), dtype=sigmas.dtype)
        for i in (ray_indices == r).nonzero()[:, 0].tolist():
            alpha = 1 - torch.exp(-sigmas[i] * (t_ends[i] - t_starts[i]))
            weight = transmittance * alpha
            c = c + weight * rgbs[i]
            o = o + weight
            z = z + weight * (t_starts[i] + t_ends[i]) / 2
            transmittance = transmittance * (1 - alpha)
        rgb.append(c), opacity.append(o), depth.append(z)
    return torch.stack(rgb), torch.stack(opacity), torch.stack(depth)


def packed_batch(counts, generator, sigma_scale=3.0, dtype=torch.float32):
    """Random packed samples with the given number of samples per ray."""
    counts = torch.tensor(counts)
    ray_indices = torch.repeat_interleave(torch.arange(len(counts)), counts)
    n = int(counts.sum())
    dt = torch.rand(n, generator=generator, dtype=dtype) * 0.1 + 0.01
    starts = torch.cat([torch.cumsum(dt[ray_indices == r], 0) - dt[ray_indices == r] for r in range(len(counts))]) + 2.0
    sigmas = torch.rand(n, generator=generator, dtype=dtype) * sigma_scale
    rgbs = torch.rand(n, 3, generator=generator, dtype=dtype)
    return sigmas, rgbs, starts, starts + dt, ray_indices, len(counts)


CASES = {
    "mixed": [3, 0, 7, 1, 0, 12],  # includes rays without samples
    "single": [1],
    "long": [200, 150],
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_values_and_gradients_match_the_loop(case, index_dtype):
    generator = torch.Generator().manual_seed(len(CASES[case]))
    sigmas, rgbs, starts, ends, indices, n_rays = packed_batch(CASES[case], generator)
    sigmas.requires_grad_(), rgbs.requires_grad_()
    out = composite(sigmas, rgbs, starts, ends, indices.to(index_dtype), n_rays)
    expected = loop_composite(sigmas.double(), rgbs.double(), starts.double(), ends.double(), indices, n_rays)
    for ours, theirs in zip(out, expected):
        torch.testing.assert_close(ours.double(), theirs, rtol=1e-5, atol=1e-6)

    v_rgb, v_opacity, v_depth = (torch.randn(t.shape, generator=generator, dtype=torch.float64) for t in expected)
    ours_grads = torch.autograd.grad(
        (out.rgb.double() * v_rgb).sum() + (out.opacity.double() * v_opacity).sum() + (out.depth.double() * v_depth).sum(),
        (sigmas, rgbs),
    )
    theirs_grads = torch.autograd.grad(
        (expected[0] * v_rgb).sum() + (expected[1] * v_opacity).sum() + (expected[2] * v_depth).sum(), (sigmas, rgbs)
    )
    for ours, theirs in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(ours.double(), theirs.double(), rtol=1e-4, atol=1e-5)


def test_near_opaque_samples_saturate_without_nan():
    generator = torch.Generator().manual_seed(9)
    sigmas, rgbs, starts, ends, indices, n_rays = packed_batch([64, 64], generator, sigma_scale=1e4)
    sigmas.requires_grad_()
    out = composite(sigmas, rgbs, starts, ends, indices, n_rays)
    torch.testing.assert_close(out.opacity, torch.ones(2))
    (v_sigmas,) = torch.autograd.grad(out.rgb.sum() + out.depth.sum(), sigmas)
    assert torch.isfinite(v_sigmas).all()


def test_no_samples_gives_zeros():
    empty = torch.empty(0)
    out = composite(empty.requires_grad_(), torch.empty(0, 3), empty, empty, torch.empty(0, dtype=torch.long), 4)
    assert torch.equal(out.rgb, torch.zeros(4, 3)) and torch.equal(out.opacity, torch.zeros(4))


@pytest.mark.gradcheck
def test_reference_gradcheck_float64():
    generator = torch.Generator().manual_seed(4)
    sigmas, rgbs, starts, ends, indices, n_rays = packed_batch([4, 0, 6, 1], generator, dtype=torch.float64)
    sigmas.requires_grad_(), rgbs.requires_grad_()
    assert torch.autograd.gradcheck(lambda s, c: _composite(s, c, starts, ends, indices, n_rays), (sigmas, rgbs))
