"""Camera pose refinement (fastjoint.model.poses, train.refine_poses): the rotation map, the
similarity held fixed, gradients from the pixels to the corrections, and the trainer's use."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import fresh_seed
from fastjoint.data.cameras import Camera, look_at, pixel_rays
from fastjoint.model.hashgrid import HashGrid
from fastjoint.model.poses import PoseRefinement, similarity_basis, so3_exp
from fastjoint.ops import composite, native


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
    refinement = PoseRefinement(poses)
    assert torch.equal(refinement(poses, torch.arange(len(poses))), poses)


def test_a_common_similarity_is_removed_and_the_rest_kept():
    """Corrections that move every camera by one small rotation, shift and scale (to first order)
    have no effect; any other correction keeps its part outside those seven directions."""
    poses = ring()
    centres = poses[:, :3, 3]
    generator = torch.Generator().manual_seed(fresh_seed())
    w, shift, scale = torch.randn(3, generator=generator), torch.randn(3, generator=generator), torch.randn(1, generator=generator)
    common = torch.cat([w.expand(len(poses), 3), torch.linalg.cross(w.expand(len(poses), 3), centres) + shift + scale * centres], dim=1)
    refinement = PoseRefinement(poses)
    with torch.no_grad():
        refinement.corrections.copy_(common * 1e-3)
    assert refinement.effective().abs().max() < 1e-8
    own = torch.randn(len(poses), 6, generator=generator) * 1e-2
    with torch.no_grad():
        refinement.corrections.copy_(own + common * 1e-3)
    kept = refinement.effective()
    assert torch.allclose(kept, refinement.effective().detach(), atol=0)  # a projection: the same whatever is added along the basis
    torch.testing.assert_close((kept - own).reshape(-1) @ kept.reshape(-1), torch.tensor(0.0), atol=1e-8, rtol=0)
    assert kept.norm() > 0.8 * own.norm()  # 12 cameras: 72 numbers, 7 of them the similarity's


def test_cameras_at_one_point_give_fewer_directions():
    """Cameras that share their centre (a panorama) cannot tell a scale from a shift: six directions, not seven."""
    centres = torch.tensor([[1.0, 2.0, 3.0]]).double().expand(5, 3)
    assert similarity_basis(centres).shape == (30, 6)
    assert similarity_basis(ring()[:, :3, 3].double()).shape == (72, 7)


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
        refinement = PoseRefinement(poses)
        image = torch.tensor([0, 1, 2, 3, 4, 5, 0, 2])
        u = torch.linspace(2, 14, 8)
        origins, dirs = pixel_rays(refinement(poses[image], image), u, u.flip(0), camera)
        t = torch.linspace(2.5, 5.5, 16)
        points = origins[:, None] + dirs[:, None] * t[None, :, None]  # [8, 16, 3]
        encoded = grid(((points.reshape(-1, 3) + 2) / 4).clamp(0, 1))
        sigmas = encoded[:, 0].exp()
        rgbs = torch.sigmoid(encoded[:, 1:2]).expand(-1, 3)
        starts = t[None].expand(8, 16).reshape(-1)
        out = composite(sigmas, rgbs, starts, starts + 0.2, torch.arange(8).repeat_interleave(16), 8, "torch")
        out.rgb.square().sum().backward()
        gradients[name] = refinement.corrections.grad
    assert (gradients[backend][:6].abs().sum(dim=1) > 0).all()
    torch.testing.assert_close(gradients[backend], gradients["torch"], rtol=1e-4, atol=1e-6)


# --- in training -------------------------------------------------------------------------


def rotation_errors(found: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:  # [n, 4, 4] each -> [n] degrees
    relative = found[:, :3, :3] @ truth[:, :3, :3].transpose(1, 2)
    return torch.rad2deg(torch.arccos(((relative.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)))


@pytest.mark.slow
def test_a_trained_scene_pulls_perturbed_poses_back(trained_run, tiny_data):
    """With the tiny run's scene held fixed, the corrections of its target's training poses, each
    turned by about 3 degrees, learn from the pixels to turn them back (most of the way)."""
    from fastjoint.data import load_split
    from fastjoint.pairing import Pairing
    from fastjoint.run import load_run

    run_dir, _, _ = trained_run
    built = load_run(run_dir, "cpu").built
    split = load_split(tiny_data / "target" / "original", "train")
    generator = torch.Generator().manual_seed(0)
    turn = torch.randn(len(split), 3, generator=generator)
    turn = turn / turn.norm(dim=1, keepdim=True) * math.radians(3.0)
    perturbed = split.poses.clone()
    perturbed[:, :3, :3] = so3_exp(turn) @ perturbed[:, :3, :3]
    refinement = PoseRefinement(perturbed)
    optimizer = torch.optim.Adam(refinement.parameters(), lr=2e-3)
    height, width = split.pixels.shape[1:3]
    for _ in range(300):
        image = torch.randint(len(split), (1024,), generator=generator)
        row, col = torch.randint(height, (1024,), generator=generator), torch.randint(width, (1024,), generator=generator)
        origins, dirs = pixel_rays(refinement(perturbed[image], image), col + 0.5, row + 0.5, split.camera)
        rgba = split.pixels[image, row, col].float() / 255
        target = rgba[:, :3] * rgba[:, 3:] + (1 - rgba[:, 3:])  # the run's white background
        rendered = built.render_rays(Pairing("target", "original"), origins, dirs, torch.ones(3)).rgb
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(rendered, target).backward()
        optimizer.step()
    with torch.no_grad():
        refined = refinement(perturbed, torch.arange(len(split)))
    before, after = rotation_errors(perturbed, split.poses), rotation_errors(refined, split.poses)
    assert after.median() < 0.5 * before.median(), (before, after)
