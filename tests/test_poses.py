"""Pose corrections (fastjoint.model.poses) and held-out views aligned to their photos
(fastjoint.align, `fastjoint eval --align-poses`): the rotation map, gradients from the pixels
to the corrections through both grid backends, and alignment on a trained run."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from conftest import fresh_seed, run_cli
from fastjoint.align import _keep_improvements, align_views
from fastjoint.data import load_split
from fastjoint.data.cameras import Camera, look_at, pixel_rays
from fastjoint.model.hashgrid import HashGrid
from fastjoint.model.poses import PoseCorrection, so3_exp
from fastjoint.ops import composite, native
from fastjoint.pairing import Pairing
from fastjoint.run import load_run


def skew(omega: torch.Tensor) -> torch.Tensor:  # [n, 3] -> [n, 3, 3]
    x, y, z = omega.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).view(-1, 3, 3)


def ring(n: int = 12) -> torch.Tensor:  # [n, 4, 4] cameras around the origin at two heights
    return torch.stack(
        [
            look_at(torch.tensor([4 * math.cos(a), 4 * math.sin(a), 1.0 + (k % 2)]), torch.zeros(3))
            for k, a in enumerate(torch.linspace(0, 6, n))
        ]
    )


def test_so3_exp_is_the_matrix_exponential_of_the_axis_angle():
    generator = torch.Generator().manual_seed(fresh_seed())
    omega = torch.cat([torch.randn(20, 3, generator=generator), torch.randn(5, 3, generator=generator) * 1e-6, torch.zeros(1, 3)])
    torch.testing.assert_close(so3_exp(omega.double()), torch.linalg.matrix_exp(skew(omega.double())), rtol=1e-12, atol=1e-12)
    rotation = so3_exp(omega)
    torch.testing.assert_close(rotation @ rotation.transpose(1, 2), torch.eye(3).expand(26, 3, 3), rtol=0, atol=1e-5)


def test_so3_exp_has_the_skew_matrices_as_its_gradient_at_zero():
    """At zero (where every correction starts) the derivative is finite: d R / d w_k = K_k."""
    omega = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    jacobian = torch.autograd.functional.jacobian(lambda w: so3_exp(w)[0], omega)[..., 0, :]  # [3, 3, 3]
    for k in range(3):
        unit = torch.zeros(1, 3, dtype=torch.float64)
        unit[0, k] = 1.0
        torch.testing.assert_close(jacobian[..., k], skew(unit)[0])


def test_zero_corrections_leave_the_poses_as_they_are():
    poses = ring()
    assert torch.equal(PoseCorrection(len(poses))(poses, torch.arange(len(poses))), poses)


def test_a_correction_turns_about_the_centre_and_shifts_it():
    poses = ring(3)
    correction = PoseCorrection(3)
    with torch.no_grad():
        correction.corrections[1] = torch.tensor([0.0, 0.0, 0.1, 0.5, 0.0, 0.0])
    moved = correction(poses, torch.arange(3))
    assert torch.equal(moved[[0, 2]], poses[[0, 2]])
    torch.testing.assert_close(moved[1, :3, 3], poses[1, :3, 3] + torch.tensor([0.5, 0.0, 0.0]))
    torch.testing.assert_close(moved[1, :3, :3], so3_exp(torch.tensor([[0.0, 0.0, 0.1]]))[0] @ poses[1, :3, :3])
    degrees, shifts = correction.sizes()
    torch.testing.assert_close(degrees, torch.tensor([0.0, math.degrees(0.1), 0.0]))
    torch.testing.assert_close(shifts, torch.tensor([0.0, 0.5, 0.0]))


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_pixels_reach_the_corrections_through_the_renderer(backend):
    """A loss on rendered pixels gives every drawn photo's correction a gradient, through the hash grid
    (both backends, the same gradient) and the compositing."""
    if backend == "native" and native.load() is not None:
        pytest.fail(f"the native kernels did not build: {native.load()}")
    poses = ring(6)
    camera = Camera(16, 16, 20.0)
    gradients = {}
    for name in ("torch", backend):
        torch.manual_seed(3)
        grid = HashGrid(4, 2, 10, 4, 1.5, backend=name)
        with torch.no_grad():
            grid.table.uniform_(-1, 1)
        correction = PoseCorrection(len(poses))
        image = torch.tensor([0, 1, 2, 3, 4, 5, 0, 2])
        u = torch.linspace(2, 14, 8)
        origins, dirs = pixel_rays(correction(poses[image], image), u, u.flip(0), camera)
        t = torch.linspace(2.5, 5.5, 16)
        points = origins[:, None] + dirs[:, None] * t[None, :, None]  # [8, 16, 3]
        encoded = grid(((points.reshape(-1, 3) + 2) / 4).clamp(0, 1))
        sigmas = encoded[:, 0].exp()
        rgbs = torch.sigmoid(encoded[:, 1:2]).expand(-1, 3)
        starts = t[None].expand(8, 16).reshape(-1)
        out = composite(sigmas, rgbs, starts, starts + 0.2, torch.arange(8).repeat_interleave(16), 8, "torch")
        out.rgb.square().sum().backward()
        gradients[name] = correction.corrections.grad
    assert (gradients[backend][:6].abs().sum(dim=1) > 0).all()
    torch.testing.assert_close(gradients[backend], gradients["torch"], rtol=1e-4, atol=1e-6)


# --- aligning held-out views ---------------------------------------------------------


def rotation_errors(found: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:  # [n, 4, 4] each -> [n] degrees
    relative = found[:, :3, :3] @ truth[:, :3, :3].transpose(1, 2)
    return torch.rad2deg(torch.arccos(((relative.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)))


@pytest.mark.slow
def test_held_out_views_turned_by_3_degrees_are_aligned_back(trained_run, tiny_data):
    """The tiny run's target test views, each turned by 3 degrees about its centre, are turned back
    (most of the way) by aligning them to their photos; the model does not change."""
    run_dir, _, _ = trained_run
    run = load_run(run_dir, "cpu")
    before = {name: value.clone() for name, value in run.built.model.state_dict().items()}
    split = load_split(tiny_data / "target" / "original", "test")
    generator = torch.Generator().manual_seed(0)
    turn = torch.randn(len(split), 3, generator=generator)
    turn = turn / turn.norm(dim=1, keepdim=True) * math.radians(3.0)
    turned = dataclasses.replace(split, poses=split.poses.clone())
    turned.poses[:, :3, :3] = so3_exp(turn) @ split.poses[:, :3, :3]
    aligned = align_views(run, Pairing("target", "original"), turned)
    errors_before, errors_after = rotation_errors(turned.poses, split.poses), rotation_errors(aligned.poses, split.poses)
    assert errors_after.median() < 0.5 * errors_before.median(), (errors_before, errors_after)
    assert aligned.rotation_deg.median() > 1.5  # the corrections did the turning
    assert all(torch.equal(value, before[name]) for name, value in run.built.model.state_dict().items())
    assert all(p.requires_grad for p in run.built.model.parameters())  # unfrozen again


@pytest.mark.slow
def test_a_correction_that_does_not_lower_the_error_is_undone(trained_run, tiny_data):
    """The last check of an alignment: of the tiny run's exact test views, the one whose correction
    turns it away by 3 degrees goes back to its pose as given, the one whose correction turns it back
    from 3 degrees off keeps it, and a view with no correction has none."""
    run_dir, _, _ = trained_run
    run = load_run(run_dir, "cpu")
    split = load_split(tiny_data / "target" / "original", "test")
    assert len(split) >= 3
    axis = torch.nn.functional.normalize(torch.tensor([0.3, 1.0, -0.5]), dim=0) * math.radians(3.0)
    turned = dataclasses.replace(split, poses=split.poses.clone())
    turned.poses[1, :3, :3] = so3_exp(axis[None])[0] @ split.poses[1, :3, :3]
    correction = PoseCorrection(len(split))
    with torch.no_grad():
        correction.corrections[0, :3] = axis  # away from the truth
        correction.corrections[1, :3] = -axis  # back to it
        _keep_improvements(
            run.built, Pairing("target", "original"), turned, turned.poses, correction, torch.Generator().manual_seed(0), None
        )
    assert torch.equal(correction.corrections[0], torch.zeros(6)), correction.corrections
    torch.testing.assert_close(correction.corrections[1, :3], -axis)
    assert torch.equal(correction.corrections[2:], torch.zeros(len(split) - 2, 6))


@pytest.mark.slow
def test_eval_aligns_poses_on_request_and_records_each_correction(run_copy):
    """`fastjoint eval --align-poses`: every trained pairing's views aligned (the kit's poses are exact,
    so the corrections stay small and the scores hardly move), eval.json records them; with the fast
    renderer it is one line, exit 2."""
    plain = json.loads((run_copy / "eval.json").read_text())
    result = run_cli("eval", str(run_copy), "--align-poses")
    assert result.returncode == 0, result.stderr
    aligned = json.loads((run_copy / "eval.json").read_text())
    assert plain["aligned_poses"] is None
    assert set(aligned["aligned_poses"]) == {"steps", *plain["pairings"]}
    for name, scores in aligned["pairings"].items():
        corrections = aligned["aligned_poses"][name]
        assert len(corrections["rotation_deg"]) == scores["views"] and max(corrections["rotation_deg"]) < 1.0, corrections
        assert scores["psnr"] > plain["pairings"][name]["psnr"] - 0.5, (name, scores, plain["pairings"][name])
    assert "test poses aligned to their photos" in result.stdout + result.stderr
    refused = run_cli("eval", str(run_copy), "--align-poses", "--renderer", "fast")
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0
    assert "--align-poses: needs --renderer exact" in refused.stderr
