"""A trained scene baked for fast rendering, and style decoders as lookup tables.

Rendering a trained scene exactly runs the hash grid and the feature head at every sample.
The hash grid and the head's density network do not depend on the style or the view, and
both are known once training ends, so they can be evaluated once, on a grid, and looked up
afterwards:

- `BakedScene`: per occupied cell of the scene's occupancy grid, a brick of (B + 1)^3
  corners (B sub-cells per axis) holding the density before its exp activation and, after
  it, one of two things; a sample reads the trilinear interpolation of its sub-cell's
  corners. Empty cells hold nothing and are skipped whole; a ray stops once it is opaque
  (`MIN_TRANSMITTANCE`). After the density:
  - **view-dependent** (`view_dependent`; unbounded scenes, the real captures): the geometry
    features the density network passes to the feature network, which then runs on the kept
    samples only, each with its ray's direction (`Built` does it), as the exact renderer does;
  - **averaged** (bounded scenes): the style feature averaged over 12 view directions
    (`BAKE_DIRECTIONS`), 2 channels against 15, and no network per sample.
- `DecoderTable`: a style decoder evaluated on a P x P grid over the feature plane
  [-1, 1]^2 and read bilinearly, so that decoding costs one lookup and a new style (a swap,
  a painting) is a new table. Only for decoders that read the feature alone: where they also
  read the normal (model.decoder_normal, the default), the bricks hold the normal a decoder
  reads (the last 3 channels, interpolated as the rest) and the decoder runs on each sample.

What it gives up against the exact renderer: the interpolation between corners (B
sub-cells per cell; the defaults match the hash grid's finest resolution) and, averaged, the
view dependence. Measured (benchmarks/README.md, "The fast renderer against the exact one"):
on the fox, a real capture, the averaged bake lost 5.7 dB against the exact renderer; on the
demo it costs 0.07 to 0.67 dB and runs about twice as fast as the view-dependent one, with
a fifth of the memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from fastjoint.ops.baked import BakedMarch, Skipping, baked_march, skipping
from fastjoint.render.cached import MIN_WEIGHT, SampleCache

MIN_TRANSMITTANCE = 1e-4  # a ray stops once less than this of the light behind it gets through
TABLE_PIXELS = 256  # side of a decoder's lookup table over [-1, 1]^2
MAX_SUB_CELLS = 8
# Corners evaluated at once while baking (larger chunks run slower in the averaged bake: the 12
# directions x 64 hidden units per corner leave the cache).
BAKE_CHUNK = 1 << 14
MARCH_CHUNK = 1 << 18  # rays marched at once (the reference holds every step of them in memory)


def icosahedron() -> Tensor:  # [12, 3] unit
    """The 12 vertices of a regular icosahedron: view directions spread evenly over the sphere."""
    phi = (1.0 + 5.0**0.5) / 2.0
    vertices = []
    for a in (-1.0, 1.0):
        for b in (-phi, phi):
            vertices += [(0.0, a, b), (a, b, 0.0), (b, 0.0, a)]
    return nn.functional.normalize(torch.tensor(vertices), dim=-1)


BAKE_DIRECTIONS = icosahedron()


def sub_cells(grid_max_resolution: int, occ_resolution: int) -> int:
    """Sub-cells per occupancy cell and axis so that the bake's finest level matches the hash grid's."""
    return max(2, min(MAX_SUB_CELLS, math.ceil(grid_max_resolution / occ_resolution)))


class BakedScene(NamedTuple):
    """A scene's density and geometry features (view-dependent) or mean style feature on the bricks of its occupied cells."""

    aabbs: Tensor  # [L, 6] the occupancy levels' boxes
    index: Tensor  # [L, R, R, R] int32: the brick of each occupied cell, else -1
    bricks: Tensor  # [n, B + 1, B + 1, B + 1, 1 + geometry_features] (view-dependent) or [..., 1 + feature_dim]
    step_size: float
    skip: Skipping  # empty space the native kernel skips whole
    view_dependent: bool = False  # the bricks hold geometry features, for the feature network per sample

    @property
    def nbytes(self) -> int:
        tensors = (self.aabbs, self.index, self.bricks, self.skip.bounds, self.skip.blocks)
        return sum(t.numel() * t.element_size() for t in tensors)

    def march(self, rays_o: Tensor, rays_d: Tensor, backend: str = "torch") -> BakedMarch:
        """The rays' kept samples (their features: what the bricks hold after the density), opacity and depth,
        MARCH_CHUNK rays at a time (see `baked_march`)."""
        parts, shift = [], 0
        for o, d in zip(rays_o.split(MARCH_CHUNK), rays_d.split(MARCH_CHUNK), strict=True):
            out = baked_march(o, d, self.aabbs, self.index, self.bricks, self.step_size, MIN_TRANSMITTANCE, MIN_WEIGHT, backend, self.skip)
            parts.append(out._replace(ray_indices=out.ray_indices + shift))
            shift += o.shape[0]
        if len(parts) == 1:
            return parts[0]
        return BakedMarch(*(torch.cat(tensors) for tensors in zip(*parts, strict=True)))


def as_cache(out: BakedMarch) -> SampleCache:
    """A baked march's kept samples as a SampleCache (what the viewer keeps and decoders composite)."""
    return SampleCache(out.ray_indices, out.weights, out.features, out.opacity, int(out.opacity.shape[0]))


# points [N, 3] world -> [N, C]: density logit, then the geometry features or the mean style feature.
BakeFunction = Callable[[Tensor], Tensor]


@torch.no_grad()
def bake_scene(
    values: BakeFunction,
    binaries: Tensor,  # [L, R, R, R] bool, the scene's occupancy grid
    aabbs: Tensor,  # [L, 6]
    step_size: float,
    sub: int,
    progress: Callable[[int, int], None] | None = None,
    view_dependent: bool = False,
) -> BakedScene:
    """Evaluates `values` at the corners of every occupied cell's B^3 sub-cells (B = `sub`).

    `progress(done, total)` is called after each chunk of corners.
    """
    device = binaries.device
    occupied = binaries.nonzero()  # [n, 4]: level, x, y, z
    index = torch.full(binaries.shape, -1, dtype=torch.int32, device=device)
    index[occupied[:, 0], occupied[:, 1], occupied[:, 2], occupied[:, 3]] = torch.arange(
        occupied.shape[0], dtype=torch.int32, device=device
    )
    side = sub + 1
    axis = torch.arange(side, device=device, dtype=torch.float32) / sub
    local = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)  # [(B+1)^3, 3] in [0, 1]
    resolution = torch.tensor(binaries.shape[1:], device=device, dtype=torch.float32)
    n_corners = side**3
    per_chunk = max(1, BAKE_CHUNK // n_corners)
    parts, total = [], occupied.shape[0]
    for start in range(0, total, per_chunk):
        cells = occupied[start : start + per_chunk]
        lo, hi = aabbs[cells[:, 0], :3], aabbs[cells[:, 0], 3:]
        corner = (cells[:, None, 1:].float() + local[None]) / resolution  # [c, (B+1)^3, 3] in [0, 1] of the level's box
        points = lo[:, None] + corner * (hi - lo)[:, None]
        parts.append(values(points.reshape(-1, 3)).reshape(cells.shape[0], side, side, side, -1))
        if progress is not None:
            progress(min(start + per_chunk, total), total)
    if not parts:  # nothing occupied: no bricks, as many channels as `values` gives
        parts.append(values(torch.zeros(0, 3, device=device)).reshape(0, side, side, side, -1))
    bricks = torch.cat(parts)
    aabbs = aabbs.float().contiguous()
    return BakedScene(aabbs, index, bricks.float().contiguous(), step_size, skipping(aabbs, index), view_dependent)


def table_points(pixels: int, device: torch.device | str = "cpu") -> Tensor:  # [P*P, 2]
    """The feature-plane points of a P x P decoder table, row-major: row j at feature y = axis[j], column i at x = axis[i]."""
    axis = torch.linspace(-1.0, 1.0, pixels, device=device)
    f1, f0 = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([f0.reshape(-1), f1.reshape(-1)], dim=-1)


class DecoderTable:
    """A style decoder as a P x P table of colours over the feature plane [-1, 1]^2, read bilinearly."""

    def __init__(self, decoder: Callable[[Tensor], Tensor], device: torch.device | str = "cpu", pixels: int = TABLE_PIXELS) -> None:
        self.pixels = pixels
        with torch.no_grad():
            colours = decoder(table_points(pixels, device))  # [P*P, 3] row-major
        self.table = colours.reshape(pixels, pixels, 3).permute(2, 0, 1)[None].contiguous()  # [1, 3, P, P], as grid_sample reads it

    def edited(self, edit: Callable[[Tensor, Tensor], Tensor]) -> DecoderTable:
        """A new table of `edit(colours [P*P, 3], points [P*P, 2]) -> [P*P, 3]` at the table's points (this one unchanged)."""
        colours = self.table[0].permute(1, 2, 0).reshape(-1, 3)
        return DecoderTable(lambda points: edit(colours, points), colours.device, self.pixels)

    def __call__(self, features: Tensor) -> Tensor:  # [N, 2] -> [N, 3]
        grid = features.clamp(-1.0, 1.0).reshape(1, 1, -1, 2).to(self.table.dtype)
        out = nn.functional.grid_sample(self.table, grid, mode="bilinear", align_corners=True)
        return out[0, :, 0].T
