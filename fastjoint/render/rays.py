"""Rendering rays and images of one radiance field.

A field is any callable `(points [N, 3], dirs [N, 3]) -> (sigma [N], rgb [N, 3])` and a
sampler says where to sample it (see samplers.py); this module knows nothing of scenes or
styles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor

from fastjoint.ops import composite
from fastjoint.render.samplers import Sampler

Field = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class RenderResult(NamedTuple):
    rgb: Tensor  # [n_rays, 3] over the background
    opacity: Tensor  # [n_rays]
    depth: Tensor  # [n_rays] expected depth (sum of weights * t)
    n_samples: int

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
) -> RenderResult:
    """Samples each ray, queries the field at the sample midpoints, composites over the background.

    Differentiable in the rays (a view's pose aligned to its photo, fastjoint.align) through the
    samples' points and directions; where the samples lie is not (the sampler sees the rays
    detached)."""
    samples = sampler(rays_o.detach(), rays_d.detach(), offsets)
    ray_indices = samples.ray_indices
    t_mids = (samples.t_starts + samples.t_ends)[:, None] * 0.5
    dirs = rays_d.index_select(0, ray_indices)
    points = rays_o.index_select(0, ray_indices) + dirs * t_mids
    sigmas, rgbs = field(points, dirs)
    out = composite(sigmas, rgbs, samples.t_starts, samples.t_ends, ray_indices, rays_o.shape[0], composite_backend)
    rgb = out.rgb + (1.0 - out.opacity)[:, None] * background
    return RenderResult(rgb, out.opacity, out.depth, int(ray_indices.shape[0]))
