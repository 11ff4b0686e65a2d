"""Marching rays through a baked scene: input checks and backend dispatch.

Backends: `torch` (the reference, `_torch_impl._baked_march`) and `native`, the kernel of
cuda_ext (`torch.ops.fastjoint.baked_march`, cuda_ext/csrc/baked.h), which walks each ray
once, skips empty cells whole and stops where the ray is opaque. The baked scene itself is
made by fastjoint.render.baked.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from fastjoint.ops._torch_impl import BakedMarch, _baked_march

BLOCK = 4  # cells per block and axis of the native kernel's coarse skipping grid (kBlockCells in baked.h)
MAX_DISTANCE = 255  # the blocks' distances are capped here (uint8)
# A brick corner's values at most (kMaxChannels in baked.h): the density logit, 15 geometry features and a normal.
MAX_CHANNELS = 20


class Skipping(NamedTuple):
    """What lets the native kernel skip empty space whole (derived from the index; the reference needs none)."""

    bounds: Tensor  # [6] the world box of every occupied cell, over all levels
    blocks: Tensor  # [L, ceil(R / BLOCK)]^3 uint8: each block's Chebyshev distance (in blocks, at most
    # MAX_DISTANCE) to the nearest block holding an occupied cell; 0 where it holds one


def skipping(aabbs: Tensor, index: Tensor) -> Skipping:
    """The bounds and blocks of an index (see `Skipping`)."""
    occupied = index >= 0
    levels, resolution = index.shape[0], index.shape[1:]
    factor = BLOCK
    padded = [-(-r // factor) * factor for r in resolution]
    grid = torch.zeros(levels, *padded, dtype=torch.bool, device=index.device)
    grid[:, : resolution[0], : resolution[1], : resolution[2]] = occupied
    blocks = grid.reshape(levels, padded[0] // factor, factor, padded[1] // factor, factor, padded[2] // factor, factor)
    holds = blocks.any(dim=6).any(dim=4).any(dim=2)
    # Distances by repeated dilation: a block at distance n is reached by the n-th dilation.
    distance = torch.where(holds, 0, MAX_DISTANCE).to(torch.uint8)
    reached = holds.float()[:, None]
    for n in range(1, MAX_DISTANCE):
        reached = torch.nn.functional.max_pool3d(reached, kernel_size=3, stride=1, padding=1)
        distance = torch.where((reached[:, 0] > 0) & (distance > n), n, distance).to(torch.uint8)
        if bool(reached.all()):
            break
    blocks = distance.contiguous()
    cells = occupied.nonzero()
    if cells.shape[0] == 0:
        bounds = torch.zeros(6, device=index.device)
    else:
        size = (aabbs[:, 3:] - aabbs[:, :3]) / torch.tensor(resolution, device=index.device)
        lo = aabbs[cells[:, 0], :3] + cells[:, 1:] * size[cells[:, 0]]
        bounds = torch.cat([lo.amin(0), (lo + size[cells[:, 0]]).amax(0)])
    return Skipping(bounds.float().contiguous(), blocks)


__all__ = ["BakedMarch", "Skipping", "baked_march", "skipping"]

# The native ops this module registers rules for (see fastjoint.ops.native.OP_MODULES).
NATIVE_OPS = ("fastjoint::baked_march",)


def baked_march(
    rays_o: Tensor,  # [n_rays, 3]
    rays_d: Tensor,  # [n_rays, 3], unit length
    aabbs: Tensor,  # [L, 6]
    index: Tensor,  # [L, R, R, R] int32
    bricks: Tensor,  # [n, B + 1, B + 1, B + 1, C]
    step_size: float,
    min_transmittance: float,
    min_weight: float,
    backend: str = "torch",
    skip: Skipping | None = None,
) -> BakedMarch:
    """The kept samples (ray, weight, feature) and every ray's opacity and depth (see `_baked_march`).

    `skip`: the index's `skipping(...)`, for the native kernel (computed here when not given).
    """
    assert rays_o.shape == rays_d.shape and rays_o.dim() == 2 and rays_o.shape[1] == 3, (
        f"rays must be [n_rays, 3], got {tuple(rays_o.shape)} and {tuple(rays_d.shape)}"
    )
    assert index.dim() == 4 and index.dtype == torch.int32, f"index must be int32 [L, R, R, R], got {index.dtype} {tuple(index.shape)}"
    assert aabbs.shape == (index.shape[0], 6), f"aabbs must be [L, 6] for {index.shape[0]} levels, got {tuple(aabbs.shape)}"
    assert bricks.dim() == 5 and 2 <= bricks.shape[-1] <= MAX_CHANNELS, f"bricks must be [n, B+1, B+1, B+1, C], got {tuple(bricks.shape)}"
    if backend == "torch":
        return _baked_march(rays_o, rays_d, aabbs, index, bricks, step_size, min_transmittance, min_weight)
    if backend == "native":
        skip = skipping(aabbs, index) if skip is None else skip
        out = torch.ops.fastjoint.baked_march(
            rays_o.float().contiguous(),
            rays_d.float().contiguous(),
            aabbs.float().contiguous(),
            index.contiguous(),
            bricks.float().contiguous(),
            skip.bounds,
            skip.blocks,
            BLOCK,
            float(step_size),
            float(min_transmittance),
            float(min_weight),
        )
        return BakedMarch(*out)
    raise ValueError(f"unknown baked march backend {backend!r}")


def _fake(rays_o, rays_d, aabbs, index, bricks, bounds, blocks, factor, step_size, min_transmittance, min_weight):
    n_rays = rays_o.shape[0]
    count = torch.library.get_ctx().new_dynamic_size()
    features = bricks.shape[-1] - 1
    return (
        rays_o.new_empty(count, dtype=torch.int64),
        rays_o.new_empty(count),
        rays_o.new_empty(count, features),
        rays_o.new_empty(n_rays),
        rays_o.new_empty(n_rays),
    )


_registered = False


def register_native() -> None:
    """Registers the fake-tensor rule of the native op (once, after loading); it has no gradient."""
    global _registered
    if _registered:
        return
    torch.library.register_fake("fastjoint::baked_march")(_fake)
    _registered = True
