"""Rendering rays and images of one radiance field.

A field is any callable `(points [N, 3], dirs [N, 3]) -> (sigma [N], rgb [N, 3])` and a
sampler says where to sample it (see samplers.py); this module knows nothing of scenes or
styles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from fastjoint.ops import composite
from fastjoint.ops._torch_impl import _distortion, _sample_weights
from fastjoint.render.samplers import Sampler

Field = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class RenderResult(NamedTuple):
    rgb: Tensor  # [n_rays, 3] over the background
    opacity: Tensor  # [n_rays]
    depth: Tensor  # [n_rays] expected depth (sum of weights * t)
    n_samples: int
    distortion: Tensor | None = None  # [n_rays] mip-NeRF 360's distortion loss, where render_rays was asked for it

    def surface(self, rays_o: Tensor, rays_d: Tensor, min_opacity: float) -> tuple[Tensor, Tensor]:
        """The rays that hit a surface (opacity above `min_opacity`, [n_rays] bool) and where:
        each one's expected depth along it, held fixed (no gradient), [k, 3]."""
        opacity, depth = self.opacity.detach(), self.depth.detach()
        hit = opacity > min_opacity
        return hit, rays_o[hit] + rays_d[hit] * (depth[hit] / opacity[hit])[:, None]


def render_rays(
    field: Field,
    sampler: Sampler,
    rays_o: Tensor,  # [n_rays, 3]
    rays_d: Tensor,  # [n_rays, 3], unit length
    background: Tensor,  # [n_rays, 3] or [3]
    composite_backend: str = "torch",
    offsets: Tensor | None = None,  # [n_rays] in [0, 1): stratified starts, in steps
    distortion_scale: float | None = None,
    near_gradient: float = 0.0,
) -> RenderResult:
    """Samples each ray, queries the field at the sample midpoints, composites over the background.

    With `distortion_scale`, the result also holds each ray's distortion loss (mip-NeRF 360), measured
    in `normalised_distance(t, distortion_scale)` and differentiable in the densities. With `near_gradient`,
    the gradients of the samples nearer the ray's origin than that are scaled by (t / near_gradient)^2
    (Philip and Deschaintre's "Floaters No More"): the values are unchanged.
    """
    samples = sampler(rays_o, rays_d, offsets)
    ray_indices = samples.ray_indices
    t_mids = (samples.t_starts + samples.t_ends)[:, None] * 0.5
    dirs = rays_d.index_select(0, ray_indices)
    points = rays_o.index_select(0, ray_indices) + dirs * t_mids
    sigmas, rgbs = field(points, dirs)
    if near_gradient > 0:
        scale = (t_mids / near_gradient).square().clamp(max=1.0)  # [S, 1]
        sigmas, rgbs = scaled_gradient(sigmas, scale[:, 0]), scaled_gradient(rgbs, scale)
    n_rays = rays_o.shape[0]
    out = composite(sigmas, rgbs, samples.t_starts, samples.t_ends, ray_indices, n_rays, composite_backend)
    rgb = out.rgb + (1.0 - out.opacity)[:, None] * background
    distortion = None
    if distortion_scale is not None:
        indices = ray_indices.long()
        weights = _sample_weights(sigmas, samples.t_starts, samples.t_ends, indices, n_rays)
        s_starts = normalised_distance(samples.t_starts, distortion_scale)
        s_ends = normalised_distance(samples.t_ends, distortion_scale)
        distortion = _distortion(weights, s_starts, s_ends, indices, n_rays)
    return RenderResult(rgb, out.opacity, out.depth, int(ray_indices.shape[0]), distortion)


def scaled_gradient(values: Tensor, scale: Tensor) -> Tensor:
    """`values`, with the gradient that flows back through them multiplied by `scale` (broadcast)."""
    return values * scale + (values * (1.0 - scale)).detach()


def normalised_distance(t: Tensor, scale: float) -> Tensor:
    """Distance along a ray mapped onto [0, 1): linear up to `scale` (to 1/2), then in disparity,
    1 - scale / (2 t), so that the far room and infinity weigh no more than the object (mip-NeRF 360's s)."""
    return torch.where(t < scale, t / (2.0 * scale), 1.0 - scale / (2.0 * t.clamp_min(scale)))
