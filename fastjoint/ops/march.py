"""Ray marching through an occupancy grid: input checks and backend dispatch.

Both backends compute nerfacc's `traverse_grids` on one or more nested grid levels: the
nerfacc backend calls it (CUDA only), the torch backend is our reference marcher (any device).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastjoint.ops._torch_impl import MarchResult, _march_rays

__all__ = ["MarchResult", "march_rays"]


def march_rays(
    rays_o: Tensor,  # [n_rays, 3]
    rays_d: Tensor,  # [n_rays, 3], unit length
    binaries: Tensor,  # [L, R, R, R] bool
    aabbs: Tensor,  # [L, 6], level l inside level l + 1
    near_planes: Tensor,  # [n_rays]
    far_planes: Tensor,  # [n_rays]
    step_size: float,
    backend: str = "torch",
    cone_angle: float = 0.0,
) -> MarchResult:
    """Packed samples of every ray inside occupied cells (see `_march_rays`); steps of
    max(step_size, t * cone_angle), t measured from the origin."""
    assert rays_o.shape == rays_d.shape and rays_o.dim() == 2 and rays_o.shape[1] == 3, (
        f"rays must be [n_rays, 3], got {tuple(rays_o.shape)} and {tuple(rays_d.shape)}"
    )
    assert binaries.dtype == torch.bool and binaries.dim() == 4, (
        f"binaries must be bool [L, R, R, R], got {binaries.dtype} {tuple(binaries.shape)}"
    )
    assert aabbs.shape == (binaries.shape[0], 6), f"aabbs must be [L, 6] for {binaries.shape[0]} levels, got {tuple(aabbs.shape)}"
    assert near_planes.shape == far_planes.shape == rays_o.shape[:1], "near/far planes must be [n_rays]"
    if backend == "torch":
        return _march_rays(rays_o, rays_d, binaries, aabbs, near_planes, far_planes, step_size, cone_angle)
    if backend == "nerfacc":
        from nerfacc.grid import traverse_grids

        intervals, samples, _ = traverse_grids(
            rays_o.contiguous(),
            rays_d.contiguous(),
            binaries,
            aabbs,
            near_planes=near_planes.contiguous(),
            far_planes=far_planes.contiguous(),
            step_size=step_size,
            cone_angle=cone_angle,
        )
        return MarchResult(
            samples.ray_indices.long(),
            intervals.vals[intervals.is_left],
            intervals.vals[intervals.is_right],
        )
    raise ValueError(f"unknown march backend {backend!r}")
