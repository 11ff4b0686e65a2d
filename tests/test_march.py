"""The torch marcher against dense per-ray marching on known occupancy grids."""

from __future__ import annotations

import math

import pytest
import torch

from fastjoint.ops import march_rays

AABB = torch.tensor([[-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]])


def dense_march(rays_o, rays_d, binaries, aabb, near, far, step, tol=1e-4):
    """Every step of every ray in float64, one at a time: (kept, ambiguous) sets of (ray, k).

    A step is ambiguous when its midpoint lies within `tol` of a cell or segment boundary,
    where float32 rounding may legitimately decide either way.
    """
    res = binaries.shape[1]
    lo, hi = aabb[:3].double(), aabb[3:].double()
    kept, ambiguous = set(), set()
    for r in range(rays_o.shape[0]):
        o, d = rays_o[r].double(), rays_d[r].double()
        with torch.no_grad():
            t0, t1 = (lo - o) / d, (hi - o) / d
        t_min = torch.minimum(t0, t1).nan_to_num(nan=-math.inf).max().item()
        t_max = torch.maximum(t0, t1).nan_to_num(nan=math.inf).min().item()
        if not (t_max > t_min and t_max > 0):
            continue
        start, end = max(t_min, near[r].item()), min(t_max, far[r].item())
        k = 0
        while True:
            mid = near[r].item() + (k + 0.5) * step
            if mid >= end + tol:
                break
            p = (o + d * mid - lo) / (hi - lo) * res
            near_edge = (p - p.round()).abs().min().item() < tol * res or abs(mid - start) < tol or abs(mid - end) < tol
            if mid >= start - tol:
                cell = p.floor().long().clamp(0, res - 1)
                if start <= mid < end and binaries[0, cell[0], cell[1], cell[2]]:
                    (ambiguous if near_edge else kept).add((r, k))
                elif near_edge:
                    ambiguous.add((r, k))
            k += 1
    return kept, ambiguous


def random_rays(n, generator):
    origins = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1) * 3.0
    targets = torch.rand(n, 3, generator=generator) * 1.6 - 0.8
    return origins, torch.nn.functional.normalize(targets - origins, dim=-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_dense_marching_on_a_random_grid(seed):
    generator = torch.Generator().manual_seed(seed)
    binaries = torch.rand(1, 8, 8, 8, generator=generator) < 0.3
    rays_o, rays_d = random_rays(48, generator)
    near = torch.rand(48, generator=generator) * 0.05  # stratified starts
    far = torch.full((48,), 1e10)
    step = 0.05
    out = march_rays(rays_o, rays_d, binaries, AABB, near, far, step)
    k = torch.round((out.t_starts - near[out.ray_indices]) / step).long()
    ours = set(zip(out.ray_indices.tolist(), k.tolist()))
    kept, ambiguous = dense_march(rays_o, rays_d, binaries, AABB[0], near, far, step)
    assert len(kept) > 100
    assert kept <= ours, f"missing steps: {sorted(kept - ours)[:5]}"
    assert ours <= kept | ambiguous, f"extra steps: {sorted(ours - kept - ambiguous)[:5]}"
    # Packed layout: sorted by ray, then by t; each step spans exactly one step size.
    assert torch.all(out.ray_indices[1:] >= out.ray_indices[:-1])
    torch.testing.assert_close(out.t_ends - out.t_starts, torch.full_like(out.t_starts, step))
    torch.testing.assert_close(out.t_starts, near[out.ray_indices] + k.float() * step)


def test_one_occupied_cell_gives_the_steps_inside_it():
    binaries = torch.zeros(1, 4, 4, 4, dtype=torch.bool)
    binaries[0, 2, 1, 1] = True  # x in [0, 0.5], y and z in [-0.5, 0]
    rays_o = torch.tensor([[-3.0, -0.25, -0.25]])
    rays_d = torch.tensor([[1.0, 0.0, 0.0]])
    out = march_rays(rays_o, rays_d, binaries, AABB, torch.zeros(1), torch.full((1,), 1e10), 0.1)
    # x = t - 3: midpoints t = 0.05 + 0.1 k inside x in [0, 0.5], i.e. t in [3, 3.5).
    expected = torch.arange(30, 35).float() * 0.1
    torch.testing.assert_close(out.t_starts, expected, rtol=0, atol=1e-5)
    assert out.ray_indices.tolist() == [0] * 5


def test_empty_grid_and_missing_rays_give_no_samples():
    rays_o = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 5.0, 0.0]])
    rays_d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    near, far = torch.zeros(2), torch.full((2,), 1e10)
    empty = march_rays(rays_o, rays_d, torch.zeros(1, 4, 4, 4, dtype=torch.bool), AABB, near, far, 0.1)
    assert empty.ray_indices.numel() == 0 and empty.t_starts.numel() == 0
    full = march_rays(rays_o, rays_d, torch.ones(1, 4, 4, 4, dtype=torch.bool), AABB, near, far, 0.1)
    assert set(full.ray_indices.tolist()) == {0}  # the second ray passes beside the box
    assert full.ray_indices.numel() == 20  # the box is 2 long: 20 steps of 0.1


def test_far_plane_cuts_the_ray():
    rays_o, rays_d = torch.tensor([[-3.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    out = march_rays(rays_o, rays_d, torch.ones(1, 4, 4, 4, dtype=torch.bool), AABB, torch.zeros(1), torch.full((1,), 3.5), 0.1)
    assert out.ray_indices.numel() == 15  # midpoints in [2, 3.5): the box entry to the far plane


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nerfacc's marcher needs CUDA")
def test_nerfacc_backend_matches_torch_on_cuda():
    generator = torch.Generator().manual_seed(5)
    binaries = (torch.rand(1, 16, 16, 16, generator=generator) < 0.3).cuda()
    rays_o, rays_d = (t.cuda() for t in random_rays(256, generator))
    near = (torch.rand(256, generator=generator) * 0.02).cuda()
    far = torch.full((256,), 1e10, device="cuda")
    step = 0.02
    aabb = AABB.cuda()
    ours = march_rays(rays_o, rays_d, binaries, aabb, near, far, step, backend="torch")
    theirs = march_rays(rays_o, rays_d, binaries, aabb, near, far, step, backend="nerfacc")

    def keys(out):
        k = torch.round((out.t_starts - near[out.ray_indices]) / step).long()
        return set(zip(out.ray_indices.tolist(), k.tolist()))

    a, b = keys(ours), keys(theirs)
    # Steps whose midpoints sit on a cell boundary may be decided differently by nerfacc's
    # DDA and by our per-point cell lookup; they must be a tiny fraction.
    assert len(a ^ b) <= 0.002 * len(a), f"{len(a ^ b)} of {len(a)} steps differ"


def nested_aabbs(levels: int) -> torch.Tensor:  # [levels, 6]: AABB, then twice its size each level (nerfacc's)
    return torch.cat([AABB * 2.0**level for level in range(levels)])


def dense_march_levels(rays_o, rays_d, binaries, aabbs, near, far, step, tol=1e-4):
    """`dense_march` through nested levels: each midpoint looks up the finest level that holds it."""
    res = binaries.shape[1]
    kept, ambiguous = set(), set()
    for r in range(rays_o.shape[0]):
        o, d = rays_o[r].double(), rays_d[r].double()
        spans = []
        for box in aabbs.double():
            t0, t1 = (box[:3] - o) / d, (box[3:] - o) / d
            t_min = torch.minimum(t0, t1).nan_to_num(nan=-math.inf).max().item()
            t_max = torch.maximum(t0, t1).nan_to_num(nan=math.inf).min().item()
            spans.append((t_min, t_max, t_max > t_min and t_max > 0))
        t_min, t_max, hit = spans[-1]
        if not hit:
            continue
        start, end = max(t_min, near[r].item()), min(t_max, far[r].item())
        edges = [start, end] + [t for lo, hi, h in spans[:-1] if h for t in (lo, hi)]
        k = 0
        while (mid := near[r].item() + (k + 0.5) * step) < end + tol:
            if mid >= start - tol:
                level = next(i for i, (lo, hi, h) in enumerate(spans) if i == len(spans) - 1 or (h and lo <= mid < hi))
                lo, hi = aabbs[level, :3].double(), aabbs[level, 3:].double()
                p = (o + d * mid - lo) / (hi - lo) * res
                near_edge = (p - p.round()).abs().min().item() < tol * res or any(abs(mid - t) < tol for t in edges)
                cell = p.floor().long().clamp(0, res - 1)
                if start <= mid < end and binaries[level, cell[0], cell[1], cell[2]]:
                    (ambiguous if near_edge else kept).add((r, k))
                elif near_edge:
                    ambiguous.add((r, k))
            k += 1
    return kept, ambiguous


@pytest.mark.parametrize("seed", [0, 1])
def test_several_levels_match_dense_marching(seed):
    generator = torch.Generator().manual_seed(seed)
    aabbs = nested_aabbs(3)  # boxes of side 2, 4 and 8 around the origin
    binaries = torch.rand(3, 8, 8, 8, generator=generator) < 0.3
    # Rays from inside the middle box and from outside every box, towards random points.
    origins = torch.nn.functional.normalize(torch.randn(40, 3, generator=generator), dim=-1)
    origins = origins * torch.where(torch.arange(40) % 2 == 0, 1.5, 6.0)[:, None]
    targets = torch.rand(40, 3, generator=generator) * 3.0 - 1.5
    rays_o, rays_d = origins, torch.nn.functional.normalize(targets - origins, dim=-1)
    near = torch.rand(40, generator=generator) * 0.1
    far = torch.full((40,), 1e10)
    step = 0.1
    out = march_rays(rays_o, rays_d, binaries, aabbs, near, far, step)
    k = torch.round((out.t_starts - near[out.ray_indices]) / step).long()
    ours = set(zip(out.ray_indices.tolist(), k.tolist(), strict=True))
    kept, ambiguous = dense_march_levels(rays_o, rays_d, binaries, aabbs, near, far, step)
    assert len(kept) > 300
    assert kept <= ours, f"missing steps: {sorted(kept - ours)[:5]}"
    assert ours <= kept | ambiguous, f"extra steps: {sorted(ours - kept - ambiguous)[:5]}"
    # Samples reach the outer box's walls: beyond level 0 (|x| > 1) and beyond level 1 (|x| > 2).
    points = rays_o[out.ray_indices] + rays_d[out.ray_indices] * (out.t_starts + step / 2)[:, None]
    assert (points.abs().amax(dim=-1) > 2.0).sum() > 50


def test_one_level_of_several_is_the_single_level_march():
    """With every coarser level empty, only level 0's cells give samples, as with one level."""
    generator = torch.Generator().manual_seed(3)
    fine = torch.rand(1, 8, 8, 8, generator=generator) < 0.4
    binaries = torch.cat([fine, torch.zeros(2, 8, 8, 8, dtype=torch.bool)])
    rays_o, rays_d = random_rays(64, generator)
    near, far = torch.rand(64, generator=generator) * 0.05, torch.full((64,), 1e10)
    one = march_rays(rays_o, rays_d, fine, AABB, near, far, 0.05)
    three = march_rays(rays_o, rays_d, binaries, nested_aabbs(3), near, far, 0.05)
    assert one.ray_indices.numel() > 200
    assert torch.equal(one.ray_indices, three.ray_indices)
    torch.testing.assert_close(one.t_starts, three.t_starts, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nerfacc's marcher needs CUDA")
def test_nerfacc_backend_matches_torch_on_several_levels_on_cuda():
    generator = torch.Generator().manual_seed(6)
    binaries = (torch.rand(3, 16, 16, 16, generator=generator) < 0.3).cuda()
    origins = torch.nn.functional.normalize(torch.randn(256, 3, generator=generator), dim=-1) * 6.0
    targets = torch.rand(256, 3, generator=generator) * 3.0 - 1.5
    rays_o, rays_d = origins.cuda(), torch.nn.functional.normalize(targets - origins, dim=-1).cuda()
    near = (torch.rand(256, generator=generator) * 0.02).cuda()
    far = torch.full((256,), 1e10, device="cuda")
    step = 0.02
    aabbs = nested_aabbs(3).cuda()
    ours = march_rays(rays_o, rays_d, binaries, aabbs, near, far, step, backend="torch")
    theirs = march_rays(rays_o, rays_d, binaries, aabbs, near, far, step, backend="nerfacc")

    def keys(out):
        k = torch.round((out.t_starts - near[out.ray_indices]) / step).long()
        return set(zip(out.ray_indices.tolist(), k.tolist(), strict=True))

    a, b = keys(ours), keys(theirs)
    assert len(a) > 1000
    assert len(a ^ b) <= 0.002 * len(a), f"{len(a ^ b)} of {len(a)} steps differ"
