"""Unbounded scenes: contraction, cone stepping, the extent each scene gets, and a real training of one."""

from __future__ import annotations

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from test_march import nested_aabbs

from conftest import FIXTURES, run_cli, tiny_config, write_config
from fastjoint.config import Config, DataConfig, RenderConfig, StyleData, load_config
from fastjoint.data.formats import load_split
from fastjoint.data.nerfstudio import _declared_reach
from fastjoint.errors import UserError
from fastjoint.ops import march_rays
from fastjoint.render import make_estimators, occupancy_sampler
from fastjoint.render.extent import (
    UNBOUNDED_CONE_ANGLE,
    UNBOUNDED_LEVELS,
    SceneExtent,
    contract,
    levels_for_reach,
    ray_near,
    resolve_extents,
)
from fastjoint.run import Built, load_run
from fastjoint.scenes import make_datasets

BOX = (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5)


def sequential_steps(near: float, end: float, dt: float, cone: float) -> list[tuple[float, float]]:
    """nerfacc's rule, one step at a time in float64: from t, a step of max(dt, t * cone)."""
    steps, t = [], near
    while t < end:
        step = max(dt, t * cone)
        steps.append((t, t + step))
        t += step
    return steps


@pytest.mark.parametrize("seed", [0, 1])
def test_cone_steps_match_sequential_marching(seed):
    generator = torch.Generator().manual_seed(seed)
    binaries = torch.rand(4, 8, 8, 8, generator=generator) < 0.4
    aabbs = nested_aabbs(4)  # up to +-8
    origins = torch.nn.functional.normalize(torch.randn(48, 3, generator=generator), dim=-1) * 3.0
    targets = torch.rand(48, 3, generator=generator) * 2.0 - 1.0
    rays_o, rays_d = origins, torch.nn.functional.normalize(targets - origins, dim=-1)
    near = torch.rand(48, generator=generator) * 0.05
    dt, cone = 0.05, 1 / 16  # geometric beyond t = 0.8: most of every ray
    out = march_rays(rays_o, rays_d, binaries, aabbs, near, torch.full((48,), 1e10), dt, "torch", cone)
    assert out.ray_indices.numel() > 300
    lengths = out.t_ends - out.t_starts
    torch.testing.assert_close(lengths, torch.maximum(torch.full_like(lengths, dt), out.t_starts * cone), rtol=1e-4, atol=1e-6)
    assert lengths.max() > 5 * dt  # steps grow with distance
    ours = {(r, round(s, 3)) for r, s in zip(out.ray_indices.tolist(), out.t_starts.tolist(), strict=True)}
    kept, ambiguous = set(), set()
    for r in range(48):
        o, d = rays_o[r].double(), rays_d[r].double()
        for start, end in sequential_steps(near[r].item(), 40.0, dt, cone):
            mid = o + d * (start + end) / 2
            reach = mid.abs().max().item()
            if reach >= 8.0:  # outside every level (the largest box is +-8)
                continue
            level = next(i for i in range(4) if reach < 2.0**i)
            cell = ((mid / 2.0**level + 1) / 2 * 8).floor().long().clamp(0, 7)
            cell_float = (mid / 2.0**level + 1) / 2 * 8
            edge = (cell_float - cell_float.round()).abs().min().item() < 1e-3 or min(abs(reach - 2.0**i) for i in range(4)) < 1e-3
            if binaries[level, cell[0], cell[1], cell[2]]:
                (ambiguous if edge else kept).add((r, round(start, 3)))
            elif edge:
                ambiguous.add((r, round(start, 3)))
    assert kept <= ours, f"missing steps: {sorted(kept - ours)[:5]}"
    assert ours <= kept | ambiguous, f"extra steps: {sorted(ours - kept - ambiguous)[:5]}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nerfacc's marcher needs CUDA")
def test_nerfacc_cone_stepping_matches_torch_on_cuda():
    generator = torch.Generator().manual_seed(7)
    binaries = (torch.rand(4, 16, 16, 16, generator=generator) < 0.3).cuda()
    origins = torch.nn.functional.normalize(torch.randn(256, 3, generator=generator), dim=-1) * 3.0
    targets = torch.rand(256, 3, generator=generator) * 2.0 - 1.0
    rays_o, rays_d = origins.cuda(), torch.nn.functional.normalize(targets - origins, dim=-1).cuda()
    near, far = (torch.rand(256, generator=generator) * 0.02).cuda(), torch.full((256,), 1e10, device="cuda")
    args = (rays_o, rays_d, binaries, nested_aabbs(4).cuda(), near, far, 0.02)
    ours = march_rays(*args, backend="torch", cone_angle=1 / 64)
    theirs = march_rays(*args, backend="nerfacc", cone_angle=1 / 64)

    def keys(out):
        return {(r, round(s, 3)) for r, s in zip(out.ray_indices.tolist(), out.t_starts.tolist(), strict=True)}

    a, b = keys(ours), keys(theirs)
    assert len(a) > 1000
    assert len(a ^ b) <= 0.005 * len(a), f"{len(a ^ b)} of {len(a)} steps differ"


def test_contraction_keeps_the_box_and_squeezes_the_rest():
    inside = torch.rand(100, 3) * 2 - 1
    torch.testing.assert_close(contract(inside), inside, rtol=0, atol=0)
    directions = torch.nn.functional.normalize(torch.randn(100, 3), dim=-1)
    radii = torch.tensor([1.0 + 1e-6, 2.0, 10.0, 1e6])
    for radius in radii:
        u = directions / directions.abs().amax(dim=-1, keepdim=True) * radius  # |u|_inf = radius
        c = contract(u)
        torch.testing.assert_close(c.abs().amax(dim=-1), torch.full((100,), 2.0 - 1.0 / radius.item()))
        torch.testing.assert_close(torch.nn.functional.normalize(c, dim=-1), torch.nn.functional.normalize(u, dim=-1))
    assert contract(torch.tensor([[1e30, 0.0, 0.0]])).abs().max() <= 2.0


def test_levels_reach_what_the_capture_declares():
    assert levels_for_reach(1.0, BOX) == 1
    assert levels_for_reach(1.5, BOX) == 1
    assert levels_for_reach(1.6, BOX) == 2
    assert levels_for_reach(4.78, BOX) == 3  # instant-ngp's fox: aabb_scale 4
    assert levels_for_reach(6.0, BOX) == 3
    assert levels_for_reach(1e9, BOX) == 8
    assert levels_for_reach(2.0, (-1.0, -1.0, -1.0, 3.0, 1.0, 1.0)) == 3  # box centred at x = 1: needs +-3 about its centre


def test_declared_reach_follows_instant_ngp(tmp_path):
    identity = np.eye(4)
    assert _declared_reach({}, tmp_path, identity) is None
    # Cube of side 4 at scale 0.5: +-4 file units about the origin.
    assert _declared_reach({"aabb_scale": 4, "scale": 0.5}, tmp_path, identity) == pytest.approx(4.0)
    # instant-ngp's z offset is the file's y: the cube's centre moves 1 file unit along y.
    assert _declared_reach({"aabb_scale": 4, "scale": 0.5, "offset": [0.5, 0.5, 0.0]}, tmp_path, identity) == pytest.approx(5.0)
    moved = np.diag([2.0, 2.0, 2.0, 1.0])
    moved[:3, 3] = [0.0, 0.0, 3.0]  # scene = 2 x + (0, 0, 3)
    assert _declared_reach({"aabb_scale": 4, "scale": 0.5}, tmp_path, moved) == pytest.approx(11.0)
    with pytest.raises(UserError, match=r"transforms.json: 'aabb_scale' must be a positive number, got -1"):
        _declared_reach({"aabb_scale": -1}, tmp_path / "transforms.json", identity)
    with pytest.raises(UserError, match=r"'offset' must be a list of 3 numbers"):
        _declared_reach({"aabb_scale": 2, "offset": 0.5}, tmp_path, identity)


def test_auto_extents_by_format_and_pixels():
    data = DataConfig(target="t", reference="r", styles={"s": StyleData("rs")})
    config = Config(data=data)
    blender = {"target": "blender", "reference": "blender"}
    capture = {"target": "nerfstudio", "reference": "blender"}
    opaque, none = {"target": False, "reference": False}, {"target": None, "reference": None}
    bounded = resolve_extents(config, blender, opaque, none)
    assert all(not e.unbounded and e.levels == 1 and e.cone_angle == 0 for e in bounded.values())
    mixed = resolve_extents(config, capture, opaque, {"target": 4.78, "reference": None})
    assert (mixed["target"].unbounded, mixed["target"].levels, mixed["target"].cone_angle) == (True, 3, UNBOUNDED_CONE_ANGLE)
    assert not mixed["reference"].unbounded and mixed["reference"].levels == 1
    # A capture that declares no extent, or one within the box, keeps the box.
    assert not resolve_extents(config, capture, opaque, none)["target"].unbounded
    assert not resolve_extents(config, capture, opaque, {"target": 1.2, "reference": None})["target"].unbounded
    # Photos with transparency are an object on nothing: bounded, whatever the format.
    assert not resolve_extents(config, capture, {"target": True, "reference": False}, none)["target"].unbounded
    # Explicit: both scenes, with the config's levels and cone angle.
    both = Config(data=DataConfig(target="t", reference="r", styles={"s": StyleData("rs")}, unbounded="both"))
    both = resolve_extents(both, blender, opaque, none)
    assert all(e.unbounded and e.levels == UNBOUNDED_LEVELS for e in both.values())  # none declared: 4 levels
    fixed = Config(data=data, render=RenderConfig(occ_levels=2, cone_angle=0.01))
    fixed = resolve_extents(fixed, capture, opaque, {"target": 100.0, "reference": None})
    assert (fixed["target"].levels, fixed["target"].cone_angle, fixed["reference"].levels) == (2, 0.01, 2)
    # The near plane: auto is half the box's largest side for an unbounded scene, 0 (at the camera) for a bounded one.
    assert (mixed["target"].near, mixed["reference"].near) == (1.5, 0.0)
    assert all(e.near == 0.0 for e in bounded.values())
    near = resolve_extents(Config(data=data, render=RenderConfig(near=0.25)), capture, opaque, {"target": 4.78, "reference": None})
    assert (near["target"].near, near["reference"].near) == (0.25, 0.25)


def test_rays_start_near_but_never_past_nine_tenths_of_the_way_to_the_box():
    box = torch.tensor(BOX)
    origins = torch.tensor([[10.0, 0.0, 0.0], [2.5, 0.0, 0.0], [2.5, 2.5, 0.0], [0.5, 0.0, 0.0]])
    # Distances to the box: 8.5, 1, sqrt(2) and 0 (inside); nine tenths of them: 7.65, 0.9, 1.27, 0.
    torch.testing.assert_close(ray_near(origins, 1.5, box), torch.tensor([1.5, 0.9, 0.9 * math.sqrt(2.0), 0.0]))
    torch.testing.assert_close(ray_near(origins, 0.2, box), torch.tensor([0.2, 0.2, 0.2, 0.0]))
    # The sampler takes no sample before its ray's start, and the steps it drops are the nearest ones.
    generator = torch.Generator().manual_seed(0)
    estimator = make_estimators({"target": 2, "reference": 1}, BOX, RenderConfig(occ_resolution=8))["target"]
    estimator.binaries.fill_(True)
    rays_o = torch.nn.functional.normalize(torch.randn(64, 3, generator=generator), dim=-1) * 4.0
    rays_d = torch.nn.functional.normalize(torch.rand(64, 3, generator=generator) - 0.5 - rays_o / 4.0, dim=-1)
    start = ray_near(rays_o, 1.5, box)
    assert (start > 0.5).all()
    near = occupancy_sampler(estimator, 0.05, UNBOUNDED_CONE_ANGLE, "torch", 1.5)(rays_o, rays_d, None)
    camera = occupancy_sampler(estimator, 0.05, UNBOUNDED_CONE_ANGLE, "torch")(rays_o, rays_d, None)
    assert (near.t_starts >= start[near.ray_indices] - 1e-5).all()
    assert (camera.t_starts < start[camera.ray_indices]).sum() > 64  # what the near plane drops
    assert near.ray_indices.unique().numel() == 64


def test_an_extent_from_before_the_near_plane_starts_rays_at_the_camera():
    saved = {"unbounded": True, "levels": 3, "cone_angle": UNBOUNDED_CONE_ANGLE}
    assert SceneExtent.from_json(saved) == SceneExtent(True, 3, UNBOUNDED_CONE_ANGLE, 0.0)
    assert SceneExtent.from_json(SceneExtent(True, 3, 0.0, 1.5).to_json()).near == 1.5


DATA = '[data]\ntarget = "t"\nreference = "r"\n{extra}[data.styles.b]\nreference = "rb"\n'


@pytest.mark.parametrize(
    "data, rest, message",
    [
        ('unbounded = "yes"\n', "", "data.unbounded"),
        ("", "[render]\ncone_angle = -0.1\n", "render.cone_angle: must be"),
        ("", '[render]\ncone_angle = "wide"\n', "render.cone_angle"),
        ("", "[render]\nocc_levels = 9\n", "render.occ_levels: must be"),
        ("", "[render]\nnear = -1.0\n", "render.near: must be"),
        ("", '[render]\nnear = "far"\n', "render.near"),
        ('unbounded = "both"\n', '[model]\nencoder = "mlp"\n', "data.unbounded: needs model.encoder"),
        ("", '[model]\nencoder = "mlp"\n[render]\nnear = 0.5\n', "render.near: needs model.encoder"),
    ],
)
def test_extent_key_mistakes_are_one_line(tmp_path, data, rest, message):
    path = tmp_path / "c.toml"
    path.write_text(DATA.format(extra=data) + rest)
    with pytest.raises(UserError, match=message) as error:
        load_config(path)
    assert "\n" not in str(error.value)


def test_a_run_from_before_extents_reads_as_auto(tmp_path):
    """Its config.toml says occ_levels = 1 and has no cone_angle: as a saved config that is today's "auto"
    (so resuming it with today's defaults is no change), as a config of one's own it stays 1."""
    path = tmp_path / "config.toml"
    path.write_text(DATA.format(extra="") + "[render]\nocc_levels = 1\n")
    assert load_config(path, saved=True).render.occ_levels == "auto"
    assert load_config(path).render.occ_levels == 1
    path.write_text(DATA.format(extra="") + "[render]\nocc_levels = 1\ncone_angle = 0.0\n")
    assert load_config(path, saved=True).render.occ_levels == 1


def test_built_contracts_an_unbounded_scene():
    data = DataConfig(target="t", reference="r", styles={"s": StyleData("rs")})
    config = Config(device="cpu", data=data, render=RenderConfig(occ_resolution=8))
    extents = resolve_extents(config, {"target": "colmap", "reference": "blender"}, {"target": False, "reference": True}, {"target": 30.0})
    built = Built(config, torch.device("cpu"), extents=extents)
    target, reference = built.model.encoders["target"], built.model.encoders["reference"]
    assert target.contracted and not reference.contracted
    assert target.grid.layout.resolutions[0] == 2 * reference.grid.layout.resolutions[0]
    assert tuple(built.estimators["target"].binaries.shape) == (levels_for_reach(30.0, BOX), 8, 8, 8) == (6, 8, 8, 8)
    assert tuple(built.estimators["reference"].binaries.shape) == (1, 8, 8, 8)
    # Far points have finite, distinct features: the grid covers all of space.
    far = torch.tensor([[100.0, 0.0, 0.0], [0.0, 1000.0, 0.0]])
    sigma, feature = target(far, torch.nn.functional.normalize(far, dim=-1))
    assert torch.isfinite(sigma).all() and torch.isfinite(feature).all()
    assert not torch.equal(target._grid_features(far[:1]), target._grid_features(far[1:]))


def opaque_capture(root, aabb_scale: float | None):
    """The tiny kit in nerfstudio format, its target's photos made opaque (grey behind the object)."""
    folder = make_datasets(str(FIXTURES / "tiny.toml"), root=root, format="nerfstudio")
    for dataset in (folder / "target" / "original", folder / "target" / "recolour"):
        for path in (dataset / "images").glob("*.png"):
            rgba = iio.imread(path).astype(np.float32) / 255
            rgb = rgba[..., :3] * rgba[..., 3:] + 0.5 * (1 - rgba[..., 3:])
            iio.imwrite(path, (rgb * 255 + 0.5).astype(np.uint8))
        if aabb_scale is not None:
            meta = json.loads((dataset / "transforms.json").read_text())
            (dataset / "transforms.json").write_text(json.dumps({**meta, "aabb_scale": aabb_scale}))
    return folder


@pytest.mark.slow
def test_an_opaque_capture_trains_unbounded_and_keeps_it(tmp_path):
    """auto: the opaque nerfstudio target is unbounded (levels from its aabb_scale), the transparent reference
    bounded; the decision is said in one line, kept in the checkpoint, kept on resume, and eval renders it."""
    kit = opaque_capture(tmp_path / "kit", aabb_scale=8)
    config = tiny_config(kit, tmp_path / "runs", train={"steps": 40, "checkpoint_every": 20, "log_every": 20})
    path = write_config(config, tmp_path / "c.toml")
    result = run_cli("train", str(path), "--train.steps", "20", "--no-render")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("unbounded auto:")]
    assert len(lines) == 1 and "target unbounded" in lines[0] and "reference bounded" in lines[0], result.stdout
    split = load_split(kit / "target" / "original", "train")
    levels = levels_for_reach(split.reach, config.data.aabb)
    assert levels >= 3 and f"{levels} levels" in lines[0]
    run = load_run(config.run_dir)
    target = run.built.extents["target"]
    assert (target.unbounded, target.levels, target.cone_angle, target.near) == (True, levels, UNBOUNDED_CONE_ANGLE, 1.5)
    assert "rays start 1.5 from the camera" in lines[0]
    assert run.built.model.encoders["target"].contracted and not run.built.extents["reference"].unbounded
    # Resumed where `auto` would now decide otherwise (no aabb_scale: bounded): the run keeps its extents.
    transforms = kit / "target" / "original" / "transforms.json"
    meta = json.loads(transforms.read_text())
    del meta["aabb_scale"]
    transforms.write_text(json.dumps(meta))
    result = run_cli("train", str(path), "--resume", "--no-render")
    assert result.returncode == 0, result.stderr
    assert load_run(config.run_dir).built.extents == run.built.extents
    result = run_cli("train", str(path), "--resume", "--render.cone_angle", "0.1", "--train.steps", "60", "--no-render")
    assert result.returncode == 2 and "render.cone_angle differs" in result.stderr
    result = run_cli("train", str(path), "--resume", "--render.near", "0.5", "--train.steps", "60", "--no-render")
    assert result.returncode == 2 and "render.near differs" in result.stderr
    result = run_cli("eval", str(config.run_dir))
    assert result.returncode == 0, result.stderr
    scores = json.loads((config.run_dir / "eval.json").read_text())
    assert math.isfinite(scores["pairings"]["target:original"]["psnr"])


@pytest.mark.slow
def test_a_checkpoint_from_before_extents_resumes_bounded(tmp_path):
    """A run trained before extents (its checkpoints have none) resumes as it was trained, in the box, even
    where `auto` would now make the scene unbounded (its capture has gained an aabb_scale)."""
    kit = opaque_capture(tmp_path / "kit", aabb_scale=None)
    config = tiny_config(kit, tmp_path / "runs", train={"steps": 40, "checkpoint_every": 20, "log_every": 20})
    path = write_config(config, tmp_path / "c.toml")
    result = run_cli("train", str(path), "--train.steps", "20", "--no-render", "--no-eval")
    assert result.returncode == 0, result.stderr
    for checkpoint in (config.run_dir / "checkpoints").glob("*.pt"):
        state = torch.load(checkpoint, weights_only=True)
        del state["extents"]
        torch.save(state, checkpoint)
    transforms = kit / "target" / "original" / "transforms.json"
    transforms.write_text(json.dumps({**json.loads(transforms.read_text()), "aabb_scale": 8}))
    result = run_cli("train", str(path), "--resume", "--no-render", "--no-eval")
    assert result.returncode == 0, result.stderr
    assert "unbounded auto" not in result.stdout
    run = load_run(config.run_dir)
    assert run.step == 40 and not any(extent.unbounded for extent in run.built.extents.values())
