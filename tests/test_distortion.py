"""mip-NeRF 360's distortion loss: the packed O(S) form against the double sum, its distances, its key."""

from __future__ import annotations

import pytest
import torch

from fastjoint.config import load_config
from fastjoint.errors import UserError
from fastjoint.ops._torch_impl import _distortion
from fastjoint.render.rays import normalised_distance, render_rays
from fastjoint.render.samplers import uniform_sampler


def double_sum(weights, s_starts, s_ends, ray_indices, n_rays):
    """The definition, sum_{i,j} w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 (s1_i - s0_i), ray by ray."""
    mids, out = (s_starts + s_ends) / 2, []
    for ray in range(n_rays):
        on = ray_indices == ray
        w, m, width = weights[on], mids[on], (s_ends - s_starts)[on]
        out.append((w[:, None] * w[None, :] * (m[:, None] - m[None, :]).abs()).sum() + (w.square() * width).sum() / 3)
    return torch.stack(out)


@pytest.mark.parametrize("seed", [0, 1])
def test_packed_distortion_is_the_double_sum(seed):
    generator = torch.Generator().manual_seed(seed)
    counts = [0, 1, 4, 9, 0, 6]  # rays without samples and with one among them
    ray_indices = torch.cat([torch.full((c,), ray) for ray, c in enumerate(counts)]).long()
    edges = [torch.sort(torch.rand(2 * c, generator=generator, dtype=torch.float64)).values for c in counts]
    s_starts = torch.cat([e[0::2] for e in edges])
    s_ends = torch.cat([e[1::2] for e in edges])
    weights = torch.rand(ray_indices.shape[0], generator=generator, dtype=torch.float64, requires_grad=True)
    fast = _distortion(weights, s_starts, s_ends, ray_indices, len(counts))
    slow = double_sum(weights, s_starts, s_ends, ray_indices, len(counts))
    torch.testing.assert_close(fast, slow)
    assert fast[0] == 0 and fast[4] == 0
    grad_fast = torch.autograd.grad(fast.square().sum(), weights)[0]
    grad_slow = torch.autograd.grad(slow.square().sum(), weights)[0]
    torch.testing.assert_close(grad_fast, grad_slow)


def test_normalised_distance_is_linear_then_disparity():
    t = torch.tensor([0.0, 0.5, 1.0, 2.0, 4.0, 1e6])
    s = normalised_distance(t, 1.0)
    torch.testing.assert_close(s, torch.tensor([0.0, 0.25, 0.5, 0.75, 0.875, 1.0 - 0.5e-6]))
    dense = torch.linspace(0.0, 50.0, 10001)
    s = normalised_distance(dense, 2.0)
    assert (s.diff() > 0).all() and (s < 1).all()
    assert (normalised_distance(torch.tensor([2.0 - 1e-4, 2.0 + 1e-4]), 2.0).diff().abs() < 1e-4).all()  # continuous at the scale


def test_render_rays_prefers_one_surface_to_fog():
    """Two rays of equal opacity: through one thin opaque layer, and through fog spread along the ray. The
    distortion loss of the fog is the larger; without distortion_scale there is none."""
    rays_o = torch.zeros(2, 3)
    rays_d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    sampler = uniform_sampler(0.0, 4.0, 64)

    def field(points, dirs):  # ray 0 (x = 0): a layer at z in [2, 2.0625); ray 1 (x = 1): fog everywhere
        z, fog = points[:, 2], points[:, 0] > 0.5
        layer = ((z > 2.0) & (z < 2.0625)).float() * 48.0
        sigma = torch.where(fog, torch.full_like(z, 0.75), layer)
        return sigma, torch.ones(points.shape[0], 3)

    rays_o[1, 0] = 1.0
    result = render_rays(field, sampler, rays_o, rays_d, torch.zeros(3), distortion_scale=1.0)
    torch.testing.assert_close(result.opacity[0], result.opacity[1], atol=0.02, rtol=0.0)
    assert result.distortion.shape == (2,) and result.distortion[1] > 5 * result.distortion[0]
    assert render_rays(field, sampler, rays_o, rays_d, torch.zeros(3)).distortion is None


@pytest.mark.parametrize("value, message", [("-0.5", "must be"), ('"strong"', "train.distortion_weight")])
def test_distortion_weight_mistakes_are_one_line(tmp_path, value, message):
    path = tmp_path / "c.toml"
    path.write_text(f'[data]\ntarget = "t"\nreference = "r"\n[data.styles.b]\nreference = "rb"\n[train]\ndistortion_weight = {value}\n')
    with pytest.raises(UserError, match=message) as error:
        load_config(path)
    assert "\n" not in str(error.value)


def test_near_gradient_scales_gradients_not_values():
    """Samples nearer the origin than near_gradient get (t / near_gradient)^2 of their gradient; the colour and
    opacity are those of a plain render, and samples beyond it keep their whole gradient."""
    rays_o, rays_d = torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]])
    sampler = uniform_sampler(0.0, 4.0, 8)  # midpoints 0.25, 0.75, ..., 3.75
    density = torch.full((8,), 0.3, requires_grad=True)

    def field(points, dirs):
        return density.clone(), torch.full((points.shape[0], 3), 0.5) + 0.1 * points[:, 2:]

    plain = render_rays(field, sampler, rays_o, rays_d, torch.zeros(3))
    scaled = render_rays(field, sampler, rays_o, rays_d, torch.zeros(3), near_gradient=2.0)
    torch.testing.assert_close(scaled.rgb, plain.rgb)
    torch.testing.assert_close(scaled.opacity, plain.opacity)
    grad_plain = torch.autograd.grad(plain.rgb.sum(), density)[0]
    grad_scaled = torch.autograd.grad(scaled.rgb.sum(), density)[0]
    mids = torch.arange(8) * 0.5 + 0.25
    torch.testing.assert_close(grad_scaled, grad_plain * (mids / 2.0).square().clamp(max=1.0))
    assert (grad_plain[:4] != 0).all()
