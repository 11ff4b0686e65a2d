"""Samplers and ray rendering."""

from __future__ import annotations

import torch

from fastjoint.render import render_rays, uniform_sampler


def test_uniform_sampler_bins_near_to_far():
    rays_o = torch.zeros(3, 3)
    rays_d = torch.nn.functional.normalize(torch.randn(3, 3), dim=-1)
    out = uniform_sampler(2.0, 6.0, 8)(rays_o, rays_d, None)
    assert out.ray_indices.tolist() == sorted([0, 1, 2] * 8)
    torch.testing.assert_close(out.t_starts[:8], 2.0 + 0.5 * torch.arange(8.0))
    torch.testing.assert_close(out.t_ends - out.t_starts, torch.full((24,), 0.5))
    shifted = uniform_sampler(2.0, 6.0, 8)(rays_o, rays_d, torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(shifted.t_starts[8:16], out.t_starts[8:16] + 0.25)


def test_render_rays_of_a_constant_slab():
    """A field of constant density and colour: closed-form opacity and colour over the background."""
    sigma, colour = 0.7, torch.tensor([0.2, 0.4, 0.6])

    def field(points, dirs):
        return torch.full((len(points),), sigma), colour.expand(len(points), 3)

    rays_o, rays_d = torch.zeros(4, 3), torch.tensor([[0.0, 0.0, 1.0]]).expand(4, 3)
    background = torch.tensor([1.0, 0.0, 0.0])
    result = render_rays(field, uniform_sampler(2.0, 6.0, 64), rays_o, rays_d, background)
    opacity = 1 - torch.exp(torch.tensor(-sigma * 4.0))
    torch.testing.assert_close(result.opacity, opacity.expand(4))
    torch.testing.assert_close(result.rgb, (colour * opacity + background * (1 - opacity)).expand(4, 3))
    assert result.n_samples == 4 * 64
