"""Pure-PyTorch references of every op.

These run on any device and define what the ops compute: every faster backend (nerfacc,
tiny-cuda-nn, the kernels of cuda_ext) is tested against them. Each is written for clarity
first and vectorised second; none uses a native extension.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

# tiny-cuda-nn's coherent prime hash (the first prime is 1 so that x stays coherent).
HASH_PRIMES = (1, 2654435761, 805459861)


class GridLayout(NamedTuple):
    """Per-level constants of a multiresolution hash grid, as tiny-cuda-nn derives them.

    All tuples have one entry per level.
    """

    scales: tuple[float, ...]  # float32 grid scale: 2^(level * log2(per_level_scale)) * base - 1
    resolutions: tuple[int, ...]  # ceil(scale) + 1 vertices per side
    sizes: tuple[int, ...]  # table entries of the level (hashmap_size)
    offsets: tuple[int, ...]  # first table row of the level
    hashed: tuple[bool, ...]  # whether the level hashes (else it is stored densely)

    @property
    def n_levels(self) -> int:
        return len(self.scales)

    @property
    def n_params(self) -> int:
        """Rows of the table: the sum of the level sizes."""
        return self.offsets[-1] + self.sizes[-1]


def _hashgrid_encode(
    x: Tensor,  # [N, 3] float32 in [0, 1]^3
    table: Tensor,  # [n_params, F]
    layout: GridLayout,
) -> Tensor:  # [N, n_levels * F]
    """Multiresolution hash encoding, the function tiny-cuda-nn's HashGrid computes.

    Per level: pos = x * scale + 0.5, the 8 vertices around floor(pos), each vertex's
    row (dense: x + y*res + z*res^2; hashed: the prime hash), modulo the level size,
    trilinear weights from the fractional part. Features are level-major.
    Differentiable in `table` (through autograd's gather backward).
    """
    n = x.shape[0]
    n_levels = layout.n_levels
    n_features = table.shape[1]
    device = x.device
    scales = torch.tensor(layout.scales, dtype=torch.float32, device=device)
    pos = x.float()[:, None, :] * scales[None, :, None] + 0.5  # [N, L, 3]
    floor = torch.floor(pos)
    frac = pos - floor
    vertex = floor.long()
    corners = torch.stack([vertex, vertex + 1], dim=-1)  # [N, L, 3, 2]: per axis, low and high
    axis_weights = torch.stack([1.0 - frac, frac], dim=-1)  # [N, L, 3, 2]

    # The 8 vertices enumerate as [z][y][x] (bit 0 is x, as in tiny-cuda-nn).
    weights = (axis_weights[:, :, 2, :, None, None] * axis_weights[:, :, 1, None, :, None] * axis_weights[:, :, 0, None, None, :]).reshape(
        n, n_levels, 8
    )

    rows = []
    for level in range(n_levels):
        c = corners[:, level]  # [N, 3, 2]
        if layout.hashed[level]:
            primes = torch.tensor(HASH_PRIMES, dtype=torch.int64, device=device)
            terms = (c * primes[None, :, None]) & 0xFFFFFFFF  # uint32 products
            index = terms[:, 2, :, None, None] ^ terms[:, 1, None, :, None] ^ terms[:, 0, None, None, :]
        else:
            res = layout.resolutions[level]
            strides = torch.tensor([1, res, res * res], dtype=torch.int64, device=device)
            terms = c * strides[None, :, None]
            index = terms[:, 2, :, None, None] + terms[:, 1, None, :, None] + terms[:, 0, None, None, :]
        rows.append(index.reshape(n, 8) % layout.sizes[level] + layout.offsets[level])
    rows = torch.stack(rows, dim=1)  # [N, L, 8]

    features = table.index_select(0, rows.reshape(-1)).view(n, n_levels, 8, n_features)
    encoded = torch.einsum("nlcf,nlc->nlf", features, weights.to(table.dtype))
    return encoded.reshape(n, n_levels * n_features)


class MarchResult(NamedTuple):
    """Packed samples along rays, nerfacc's convention."""

    ray_indices: Tensor  # [S] int64, sorted
    t_starts: Tensor  # [S]
    t_ends: Tensor  # [S]


def _ray_aabb(
    rays_o: Tensor,  # [n_rays, 3]
    rays_d: Tensor,  # [n_rays, 3]
    aabb: Tensor,  # [6]
) -> tuple[Tensor, Tensor, Tensor]:  # t_min [n_rays], t_max [n_rays], hit [n_rays] bool
    """Slab test of rays against one box; a ray hits if it leaves the box ahead of its origin."""
    with torch.no_grad():
        inv = 1.0 / rays_d
        t0 = (aabb[:3] - rays_o) * inv
        t1 = (aabb[3:] - rays_o) * inv
        t_min = torch.minimum(t0, t1).nan_to_num(nan=-float("inf")).amax(dim=-1)
        t_max = torch.maximum(t0, t1).nan_to_num(nan=float("inf")).amin(dim=-1)
        hit = (t_max > t_min) & (t_max > 0)
    return t_min, t_max, hit


def _finest_levels(
    boxes: list[tuple[Tensor, Tensor, Tensor]],  # per level, `_ray_aabb` of every ray
    ray_indices: Tensor,  # [S]
    t_mids: Tensor,  # [S]
) -> Tensor:  # [S] int64
    """The finest level whose box holds each sample's midpoint (by its ray's entry and exit, as nerfacc decides)."""
    level = torch.full_like(ray_indices, len(boxes) - 1)
    for index in range(len(boxes) - 2, -1, -1):
        level_min, level_max, level_hit = (b[ray_indices] for b in boxes[index])
        level = torch.where(level_hit & (t_mids >= level_min) & (t_mids < level_max), index, level)
    return level


class _ConeSteps:
    """nerfacc's cone stepping in closed form: from t, a step of max(dt, t * c).

    Below t* = dt / c every step is dt: t_k = near + k dt. From the first step k0 that starts at or
    after t*, steps grow geometrically: t_k = t_k0 (1 + c)^(k - k0). (nerfacc adds the steps one by
    one in float32; the closed form, in float64, agrees to rounding.)
    """

    def __init__(self, near: Tensor, step_size: float, cone_angle: float) -> None:  # near [n_rays]
        self.near, self.dt, self.c = near.double(), step_size, cone_angle
        self.k0 = torch.ceil((step_size / cone_angle - self.near) / step_size).clamp(min=0)  # [n_rays] float
        self.t0 = self.near + self.k0 * step_size  # where geometric steps begin
        self.log_growth = math.log1p(cone_angle)

    def first_mid_at_or_after(self, t: Tensor) -> Tensor:  # [n_rays] -> [n_rays] float64, a step index
        """The first step whose midpoint is at or after t (up to rounding)."""
        t = t.double().clamp(max=1e30)
        uniform = torch.ceil((t - self.near) / self.dt - 0.5)
        ratio = (t / (self.t0 * (1 + self.c / 2))).clamp(min=1e-30)
        geometric = self.k0 + torch.ceil(torch.log(ratio) / self.log_growth)
        return torch.where(uniform < self.k0, uniform, geometric.clamp(min=self.k0))

    def bounds(self, k: Tensor, ray_indices: Tensor) -> tuple[Tensor, Tensor]:  # [S] int64 -> start, end [S] float32
        k = k.double()
        near, k0, t0 = self.near[ray_indices], self.k0[ray_indices], self.t0[ray_indices]

        def start(i: Tensor) -> Tensor:
            return torch.where(i < k0, near + i * self.dt, t0 * torch.exp((i - k0).clamp(min=0) * self.log_growth))

        return start(k).float(), start(k + 1).float()


def _march_rays(
    rays_o: Tensor,  # [n_rays, 3]
    rays_d: Tensor,  # [n_rays, 3], unit length
    binaries: Tensor,  # [L, R, R, R] bool occupancy, indexed [level, x, y, z]
    aabbs: Tensor,  # [L, 6] boxes of the levels, each inside the next (nerfacc's: twice the size)
    near_planes: Tensor,  # [n_rays] where marching starts (stratified offsets already added)
    far_planes: Tensor,  # [n_rays]
    step_size: float,
    cone_angle: float = 0.0,
) -> MarchResult:
    """Marching through nested occupancy grids, nerfacc's `traverse_grids` semantics.

    Steps are anchored at each ray's near plane: with cone_angle 0, step k spans
    [near + k*dt, near + (k+1)*dt]; else each step from t is max(dt, t * cone_angle) long (see
    `_ConeSteps`). A step is kept when its midpoint lies inside [max(near, box entry), min(far,
    box exit)) of the largest box, and in an occupied cell of the finest level whose box (between
    the ray's entry and exit of it) holds the midpoint. Not differentiable.
    """
    assert binaries.dim() == 4 and aabbs.shape == (binaries.shape[0], 6), (
        f"binaries [L, R, R, R] and aabbs [L, 6] expected, got {tuple(binaries.shape)} and {tuple(aabbs.shape)}"
    )
    device = rays_o.device
    with torch.no_grad():
        boxes = [_ray_aabb(rays_o, rays_d, aabb) for aabb in aabbs]
        t_min, t_max, hit = boxes[-1]  # the largest box holds every other
        seg_start = torch.maximum(t_min, near_planes)
        seg_end = torch.minimum(t_max, far_planes)
        valid = hit & (seg_start < seg_end)
        # First step whose midpoint is at or after seg_start, and one past the last before seg_end.
        if cone_angle > 0:
            steps = _ConeSteps(near_planes, step_size, cone_angle)
            # One step of margin each side: `inside` below keeps exactly the rule.
            k_first = (steps.first_mid_at_or_after(seg_start) - 1).clamp(min=0)
            k_end = (steps.first_mid_at_or_after(seg_end) + 1).clamp(min=0)
        else:
            k_first = torch.ceil((seg_start - near_planes) / step_size - 0.5).clamp(min=0)
            k_end = torch.ceil((seg_end - near_planes) / step_size - 0.5).clamp(min=0)
        k_first = torch.where(valid, k_first, torch.zeros_like(k_first)).long()
        n_steps = torch.where(valid, k_end.long() - k_first, torch.zeros_like(k_first)).clamp(min=0)
        total = int(n_steps.sum())
        empty = torch.empty(0, device=device)
        if total == 0:
            return MarchResult(torch.empty(0, dtype=torch.long, device=device), empty, empty)

        ray_indices = torch.repeat_interleave(torch.arange(rays_o.shape[0], device=device), n_steps)
        first_sample = torch.cumsum(n_steps, 0) - n_steps
        k = k_first[ray_indices] + torch.arange(total, device=device) - first_sample[ray_indices]
        if cone_angle > 0:
            t_starts, t_ends = steps.bounds(k, ray_indices)
            t_mids = (t_starts + t_ends) * 0.5
        else:
            near = near_planes[ray_indices]
            t_starts = near + k.float() * step_size
            t_ends = t_starts + step_size
            t_mids = near + (k.float() + 0.5) * step_size
        # Rounding can put a boundary midpoint on the wrong side; keep exactly the rule above.
        inside = (t_mids >= seg_start[ray_indices]) & (t_mids < seg_end[ray_indices])

        level = _finest_levels(boxes, ray_indices, t_mids)
        points = rays_o[ray_indices] + rays_d[ray_indices] * t_mids[:, None]
        lo, hi = aabbs[level, :3], aabbs[level, 3:]
        resolution = torch.tensor(binaries.shape[1:], device=device)
        cells = ((points - lo) / (hi - lo) * resolution).floor().long()
        cells = torch.minimum(cells.clamp(min=0), resolution - 1)
        occupied = binaries[level, cells[:, 0], cells[:, 1], cells[:, 2]]
        keep = inside & occupied
        return MarchResult(ray_indices[keep], t_starts[keep], t_ends[keep])


class CompositeResult(NamedTuple):
    rgb: Tensor  # [n_rays, 3] colour accumulated along each ray (no background)
    opacity: Tensor  # [n_rays] sum of weights
    depth: Tensor  # [n_rays] sum of weights * sample midpoint


def _ray_offsets(ray_indices: Tensor, n_rays: int) -> Tensor:  # [n_rays + 1] int64
    """Where each ray's samples begin in a pack sorted by ray: ray r holds offsets[r]:offsets[r+1].

    Reference of the native `torch.ops.fastjoint.ray_offsets`; rays without samples get
    equal consecutive offsets.
    """
    boundaries = torch.arange(n_rays + 1, device=ray_indices.device, dtype=ray_indices.dtype)
    return torch.searchsorted(ray_indices, boundaries)


def _sample_weights(
    sigmas: Tensor,  # [S]
    t_starts: Tensor,  # [S]
    t_ends: Tensor,  # [S]
    ray_indices: Tensor,  # [S] int64, sorted
    n_rays: int,
) -> Tensor:  # [S]
    """Compositing weights w_i = T_i * alpha_i of packed samples (differentiable in sigmas).

    alpha_i = 1 - exp(-sigma_i * dt_i); T_i = exp(-sum_{j<i on the same ray} sigma_j * dt_j).
    """
    tau = sigmas * (t_ends - t_starts)  # optical thickness of each sample
    return _transmittance(tau, ray_indices, n_rays) * (1.0 - torch.exp(-tau))


def _transmittance(
    tau: Tensor,  # [S] optical thickness of each sample
    ray_indices: Tensor,  # [S] int64, sorted
    n_rays: int,
) -> Tensor:  # [S]
    """T_i = exp(-sum_{j<i on the same ray} tau_j), the light that reaches each sample (differentiable in tau)."""
    # Exclusive per-ray sum of tau: a global running sum (in float64, so that long packs
    # lose no precision) minus the running sum before the ray's first sample.
    running = torch.cumsum(tau.double(), dim=0) - tau.double()  # sum over earlier samples
    first = _ray_offsets(ray_indices, n_rays)[:-1]  # index of each ray's first sample
    before_ray = running.index_select(0, first.index_select(0, ray_indices))
    return torch.exp(-(running - before_ray).to(tau.dtype))


def _composite(
    sigmas: Tensor,  # [S]
    rgbs: Tensor,  # [S, 3]
    t_starts: Tensor,  # [S]
    t_ends: Tensor,  # [S]
    ray_indices: Tensor,  # [S] int, sorted
    n_rays: int,
) -> CompositeResult:
    """Volume rendering of packed samples, differentiable in `sigmas` and `rgbs`.

    alpha_i = 1 - exp(-sigma_i * dt_i); T_i = exp(-sum_{j<i on the same ray} sigma_j * dt_j);
    w_i = T_i * alpha_i. No early stop. Rays without samples give zeros.
    """
    ray_indices = ray_indices.long()
    weights = _sample_weights(sigmas, t_starts, t_ends, ray_indices, n_rays)
    t_mids = (t_starts + t_ends) * 0.5
    rgb = torch.zeros(n_rays, 3, dtype=rgbs.dtype, device=rgbs.device).index_add(0, ray_indices, weights[:, None] * rgbs)
    opacity = torch.zeros(n_rays, dtype=sigmas.dtype, device=sigmas.device).index_add(0, ray_indices, weights)
    depth = torch.zeros(n_rays, dtype=sigmas.dtype, device=sigmas.device).index_add(0, ray_indices, weights * t_mids)
    return CompositeResult(rgb, opacity, depth)


class BakedMarch(NamedTuple):
    ray_indices: Tensor  # [S] int64, sorted: the kept samples' rays
    weights: Tensor  # [S] their compositing weights
    features: Tensor  # [S, C - 1] their style features
    opacity: Tensor  # [n_rays] the sum of the weights of every sample taken (kept or not)
    depth: Tensor  # [n_rays] the sum of weight * midpoint of every sample taken


def _baked_lookup(
    points: Tensor,  # [N, 3] world
    level: Tensor,  # [N] int64, the occupancy level of each point
    aabbs: Tensor,  # [L, 6]
    index: Tensor,  # [L, R, R, R] int32, brick of each cell or -1
    bricks: Tensor,  # [n, B + 1, B + 1, B + 1, C]
) -> tuple[Tensor, Tensor]:  # brick [N] int64 (-1: empty cell), values [N, C] (zeros in empty cells)
    """The brick of each point's cell and the trilinear interpolation of its sub-cell's corners."""
    lo, hi = aabbs[level, :3], aabbs[level, 3:]
    resolution = torch.tensor(index.shape[1:], device=points.device)
    u = (points - lo) / (hi - lo) * resolution
    cells = torch.minimum(u.floor().long().clamp(min=0), resolution - 1)
    brick = index[level, cells[:, 0], cells[:, 1], cells[:, 2]].long()
    sub = bricks.shape[1] - 1
    local = (u - cells) * sub
    fine = local.floor().long().clamp(0, sub - 1)
    frac = (local - fine).clamp(0.0, 1.0)
    safe = brick.clamp(min=0)
    values = torch.zeros(points.shape[0], bricks.shape[-1], dtype=bricks.dtype, device=points.device)
    for corner in range(8):
        offset = torch.tensor([corner & 1, (corner >> 1) & 1, (corner >> 2) & 1], device=points.device)
        weight = torch.where(offset.bool(), frac, 1.0 - frac).prod(dim=-1, keepdim=True)
        at = fine + offset
        values = values + weight * bricks[safe, at[:, 0], at[:, 1], at[:, 2]]
    return brick, torch.where((brick >= 0)[:, None], values, torch.zeros_like(values))


def _baked_march(
    rays_o: Tensor,  # [n_rays, 3]
    rays_d: Tensor,  # [n_rays, 3], unit length
    aabbs: Tensor,  # [L, 6] boxes of the occupancy levels, each inside the next
    index: Tensor,  # [L, R, R, R] int32: the brick of each occupied cell, else -1
    bricks: Tensor,  # [n, B + 1, B + 1, B + 1, C]: density pre-activation, then the feature
    step_size: float,
    min_transmittance: float,
    min_weight: float,
) -> BakedMarch:
    """Rendering through a baked scene (the reference of the native `baked_march`, cuda_ext/csrc/baked.h).

    The steps are the exact renderer's (`_march_rays` through the occupied cells, the near
    plane at the origin); each step's density exp(s) and feature are interpolated from its
    cell's brick. A ray stops after the sample at which its transmittance falls below
    `min_transmittance`; the samples taken add to its opacity and depth, and those whose
    weight exceeds `min_weight` are kept. Not differentiable.
    """
    n_rays, device = rays_o.shape[0], rays_o.device
    with torch.no_grad():
        near = torch.zeros(n_rays, device=device)
        far = torch.full((n_rays,), float("inf"), device=device)
        samples = _march_rays(rays_o, rays_d, index >= 0, aabbs, near, far, step_size)
        ray_indices = samples.ray_indices
        t_mids = (samples.t_starts + samples.t_ends) * 0.5
        points = rays_o[ray_indices] + rays_d[ray_indices] * t_mids[:, None]
        level = _finest_levels([_ray_aabb(rays_o, rays_d, aabb) for aabb in aabbs], ray_indices, t_mids)
        _, values = _baked_lookup(points, level, aabbs, index, bricks)
        tau = values[:, 0].exp() * (samples.t_ends - samples.t_starts)
        transmittance = _transmittance(tau, ray_indices, n_rays)
        weights = transmittance * (1.0 - torch.exp(-tau))
        taken = transmittance >= min_transmittance  # the ray stopped before the samples it leaves out
        opacity = torch.zeros(n_rays, device=device).index_add(0, ray_indices[taken], weights[taken])
        depth = torch.zeros(n_rays, device=device).index_add(0, ray_indices[taken], (weights * t_mids)[taken])
        kept = taken & (weights > min_weight)
        return BakedMarch(ray_indices[kept], weights[kept], values[kept, 1:], opacity, depth)
