"""Rendering rays and images of one radiance field through its occupancy grid.

A field is any callable `(points [N, 3], dirs [N, 3]) -> (sigma [N], rgb [N, 3])`; this
module knows nothing of scenes or styles.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from nerfacc import OccGridEstimator
from torch import Tensor

from fastjoint.config import RenderConfig
from fastjoint.data.cameras import Camera, image_rays
from fastjoint.ops import Backends, composite, march_rays

Field = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

FAR_PLANE = 1e10


class RenderResult(NamedTuple):
    rgb: Tensor  # [n_rays, 3] over the background
    opacity: Tensor  # [n_rays]
    depth: Tensor  # [n_rays] expected depth (sum of weights * t)
    n_samples: int


def render_rays(
    field: Field,
    estimator: OccGridEstimator,
    rays_o: Tensor,  # [n_rays, 3]
    rays_d: Tensor,  # [n_rays, 3], unit length
    background: Tensor,  # [n_rays, 3] or [3]
    config: RenderConfig,
    backends: Backends,
    offsets: Tensor | None = None,  # [n_rays] in [0, 1): stratified start of marching, in steps
) -> RenderResult:
    """Marches, queries the field at the sample midpoints, composites over the background."""
    n_rays = rays_o.shape[0]
    near = torch.zeros(n_rays, device=rays_o.device)
    if offsets is not None:
        near = near + offsets * config.step_size
    far = torch.full_like(near, FAR_PLANE)
    samples = march_rays(
        rays_o, rays_d, estimator.binaries, estimator.aabbs, near, far, config.step_size, backends.march
    )
    ray_indices = samples.ray_indices
    t_mids = (samples.t_starts + samples.t_ends)[:, None] * 0.5
    dirs = rays_d.index_select(0, ray_indices)
    points = rays_o.index_select(0, ray_indices) + dirs * t_mids
    sigmas, rgbs = field(points, dirs)
    out = composite(sigmas, rgbs, samples.t_starts, samples.t_ends, ray_indices, n_rays, backends.composite)
    rgb = out.rgb + (1.0 - out.opacity)[:, None] * background
    return RenderResult(rgb, out.opacity, out.depth, int(ray_indices.shape[0]))


@torch.no_grad()
def render_image(
    field: Field,
    estimator: OccGridEstimator,
    pose: Tensor,  # [4, 4] camera-to-world
    camera: Camera,
    background: Tensor,  # [3]
    config: RenderConfig,
    backends: Backends,
) -> Tensor:  # [H, W, 3]
    """A whole view, rendered `config.chunk` rays at a time."""
    rays_o, rays_d = image_rays(pose, camera)
    chunks = [
        render_rays(field, estimator, o, d, background, config, backends).rgb
        for o, d in zip(rays_o.split(config.chunk), rays_d.split(config.chunk))
    ]
    return torch.cat(chunks).reshape(camera.height, camera.width, 3).clamp(0.0, 1.0)
