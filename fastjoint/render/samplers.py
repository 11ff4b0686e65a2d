"""Where along each ray to sample: through an occupancy grid, or uniformly (the baseline).

A sampler maps rays (and optional per-ray stratification offsets in [0, 1), in units of
one step) to packed samples, nerfacc's convention.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from nerfacc import OccGridEstimator
from torch import Tensor

from fastjoint.ops import MarchResult, march_rays
from fastjoint.render.extent import ray_near

Sampler = Callable[[Tensor, Tensor, "Tensor | None"], MarchResult]

FAR_PLANE = 1e10


def occupancy_sampler(
    estimator: OccGridEstimator, step_size: float, cone_angle: float, march_backend: str, near_plane: float = 0.0
) -> Sampler:
    """Steps of max(`step_size`, t * `cone_angle`) through the occupied cells of `estimator`'s grid, from
    `near_plane` (at most nine tenths of the way to the grid's innermost box: `ray_near`)."""
    box = estimator.aabbs[0]

    def sample(rays_o: Tensor, rays_d: Tensor, offsets: Tensor | None = None) -> MarchResult:
        if near_plane > 0:
            near = ray_near(rays_o, near_plane, box.to(rays_o.device))
        else:
            near = torch.zeros(rays_o.shape[0], device=rays_o.device)
        if offsets is not None:
            near = near + offsets * step_size
        far = torch.full_like(near, FAR_PLANE)
        return march_rays(rays_o, rays_d, estimator.binaries, estimator.aabbs, near, far, step_size, march_backend, cone_angle)

    return sample


def uniform_sampler(near: float, far: float, n_samples: int) -> Sampler:
    """`n_samples` equal bins between `near` and `far` on every ray (shifted by the offsets)."""
    width = (far - near) / n_samples

    def sample(rays_o: Tensor, rays_d: Tensor, offsets: Tensor | None = None) -> MarchResult:
        n_rays, device = rays_o.shape[0], rays_o.device
        starts = near + width * torch.arange(n_samples, dtype=torch.float32, device=device)[None, :].expand(n_rays, -1)
        if offsets is not None:
            starts = starts + width * offsets[:, None]
        ray_indices = torch.arange(n_rays, device=device).repeat_interleave(n_samples)
        starts = starts.reshape(-1)
        return MarchResult(ray_indices, starts, starts + width)

    return sample
