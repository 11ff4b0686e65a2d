"""Camera paths: nerfstudio's camera-path JSON in and out, paths from a dataset's cameras, `render --camera-path/--path/--size`."""

from __future__ import annotations

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from test_cli import assert_one_line_error

from conftest import run_cli
from fastjoint.camera_path import (
    CameraPath,
    interpolate_poses,
    interpolated_path,
    load_camera_path,
    save_camera_path,
    spiral_path,
)
from fastjoint.data import Camera, look_at, orbit_poses
from fastjoint.errors import UserError
from fastjoint.metrics import psnr
from fastjoint.renders import parse_size, sized_camera


def rotation_error(poses: torch.Tensor) -> float:
    r = poses[:, :3, :3].double()
    return (r.transpose(1, 2) @ r - torch.eye(3, dtype=torch.float64)).abs().max().item()


def test_interpolation_passes_through_its_keyframes_smoothly():
    keyframes = orbit_poses(5, 4.0, 0.3, torch.zeros(3))[:4]  # a quarter turn apart, open
    n = 31  # 10 frames per segment: keyframe k is frame 10 k
    path = interpolate_poses(keyframes, n)
    for k in range(4):
        assert torch.allclose(path[10 * k], keyframes[k], atol=1e-5), k
    assert rotation_error(path) < 1e-5 and torch.allclose(path[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    steps = (path[1:, :3, 3] - path[:-1, :3, 3]).norm(dim=-1)  # no jumps: steps of similar length
    assert steps.max() < 2.0 * steps.min(), steps
    closed = interpolate_poses(keyframes, 40, cycle=True)
    assert torch.allclose(closed[0], keyframes[0], atol=1e-5) and (closed[-1, :3, 3] - keyframes[0, :3, 3]).norm() < steps.max() * 2


def test_paths_from_cameras_look_at_the_scene():
    cameras = orbit_poses(20, 4.0, 0.5, torch.zeros(3))[torch.randperm(20, generator=torch.Generator().manual_seed(0))]
    path = interpolated_path(cameras, 50)
    radius = path[:, :3, 3].norm(dim=-1)  # stays near the sphere the cameras are on, through 8 of them in a short tour
    assert rotation_error(path) < 1e-5 and radius.min() > 3.5 and radius.max() < 4.5, radius
    forward = torch.stack([look_at(torch.tensor([0.0, -4.0, 0.5]) + torch.tensor([x, 0.0, 0.0]), torch.zeros(3)) for x in (-0.5, 0.0, 0.5)])
    spiral = spiral_path(forward, torch.zeros(3), 30)
    to_focus = torch.nn.functional.normalize(-spiral[:, :3, 3], dim=-1)
    assert torch.allclose(-spiral[:, :3, 2], to_focus, atol=1e-5)  # every frame looks at the focus
    assert (spiral[:, :3, 3] - forward[:, :3, 3].mean(0)).norm(dim=-1).max() < 1.0  # near the cameras


def test_camera_path_file_round_trip_and_fov(tmp_path):
    poses = orbit_poses(6, 4.0, 0.3, torch.zeros(3))
    path = CameraPath(poses, torch.linspace(40.0, 60.0, 6), 80, 60, fps=12.0)
    file = save_camera_path(tmp_path / "path.json", path, keyframes=[{"note": "kept"}])
    data = json.loads(file.read_text())
    assert data["render_width"] == 80 and data["render_height"] == 60 and data["seconds"] == 0.5 and data["keyframes"] == [{"note": "kept"}]
    loaded = load_camera_path(file)
    assert torch.allclose(loaded.poses, poses, atol=1e-6) and torch.allclose(loaded.fov, path.fov) and loaded.fps == 12.0
    camera = loaded.camera(0)
    assert math.isclose(math.degrees(2 * math.atan(30.0 / camera.focal_y)), 40.0, rel_tol=1e-6)  # fov is vertical
    assert loaded.resized(120).width == 160 and loaded.resized((50, 20)).height == 20


def test_moving_a_path_to_another_frame():
    path = CameraPath(orbit_poses(4, 4.0, 0.3, torch.zeros(3)), torch.full((4,), 50.0), 10, 10)
    similarity = torch.eye(4, dtype=torch.float64)
    similarity[:3, :3] = 0.5 * torch.linalg.matrix_exp(
        torch.tensor([[0.0, -0.3, 0.1], [0.3, 0.0, -0.2], [-0.1, 0.2, 0.0]], dtype=torch.float64)
    )
    similarity[:3, 3] = torch.tensor([1.0, -2.0, 0.5])
    moved = path.moved(similarity)
    assert rotation_error(moved.poses) < 1e-5 and torch.equal(moved.fov, path.fov)
    expected = path.poses[:, :3, 3].double() @ similarity[:3, :3].T + similarity[:3, 3]
    assert torch.allclose(moved.poses[:, :3, 3].double(), expected, atol=1e-5)
    # Every camera still looks at the (moved) centre of the orbit.
    centre = similarity[:3, 3].float()
    assert torch.allclose(-moved.poses[:, :3, 2], torch.nn.functional.normalize(centre - moved.poses[:, :3, 3], dim=-1), atol=1e-5)


def nerfstudio_path(poses, **top) -> dict:
    """A camera path as nerfstudio's viewer writes it (nested or flat matrices both occur in the wild)."""
    return {
        "camera_type": "perspective",
        "render_height": 20,
        "render_width": 30,
        "seconds": 1.0,
        "smoothness_value": 0.5,
        "is_cycle": False,
        "crop": None,
        "keyframes": [],
        "camera_path": [{"camera_to_world": p.reshape(-1).tolist(), "fov": 50, "aspect": 1.5} for p in poses],
        **top,
    }


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda d: d.pop("render_width"), "no 'render_width'"),
        (lambda d: d.update(render_height=0), "render_height must be a positive whole number, got 0"),
        (lambda d: d.update(camera_path=[]), "camera_path must be a non-empty list"),
        (lambda d: d["camera_path"][1].pop("fov"), "camera_path[1]: no 'fov'"),
        (lambda d: d["camera_path"][0].update(fov=180), "camera_path[0].fov must be a number in (0, 180), got 180"),
        (lambda d: d["camera_path"][0].update(camera_to_world=[1, 0, 0]), "camera_path[0].camera_to_world must be 16 numbers"),
        (lambda d: d["camera_path"][1]["camera_to_world"].__setitem__(0, 3.0), "camera_path[1].camera_to_world is not a rigid transform"),
        (
            lambda d: d["camera_path"][0]["camera_to_world"].__setitem__(5, "x"),
            'camera_path[0].camera_to_world[5] must be a number, got "x"',
        ),
        (lambda d: d.update(camera_type="fisheye"), 'camera_type "fisheye" is not supported'),
        (lambda d: d.update(seconds=0), "seconds must be a number in (0, inf)"),
    ],
)
def test_malformed_camera_paths_name_the_key(change, fragment, tmp_path):
    data = nerfstudio_path(orbit_poses(3, 4.0, 0.3, torch.zeros(3)).numpy())
    change(data)
    file = tmp_path / "bad.json"
    file.write_text(json.dumps(data))
    with pytest.raises(UserError) as raised:
        load_camera_path(file)
    assert str(raised.value).startswith(f"{file}: ") and fragment in str(raised.value), str(raised.value)


def test_sizes():
    assert parse_size("1080") == 1080 and parse_size("1920x1080") == (1920, 1080)
    for bad in ("", "0", "12x", "axb", "1x2x3", "-5"):
        with pytest.raises(UserError, match="--size"):
            parse_size(bad)
    camera = Camera(40, 20, 30.0, cx=18.0, cy=11.0)
    double = sized_camera(camera, 40)
    assert (double.width, double.height, double.focal, double.cx, double.cy) == (80, 40, 60.0, 36.0, 22.0)
    wide = sized_camera(camera, (60, 20))  # another aspect: the same vertical view, wider
    assert (wide.focal, wide.cx, wide.cy) == (30.0, 28.0, 11.0)


@pytest.mark.slow
def test_render_a_hand_written_camera_path_at_any_size(run_copy, tmp_path):
    poses = np.stack([look_at(torch.tensor([4.0 * math.cos(a), 4.0 * math.sin(a), 1.5]), torch.zeros(3)).numpy() for a in (0.0, 0.6, 1.2)])
    data = nerfstudio_path(poses, fps=6)
    data["camera_path"][2]["camera_to_world"] = poses[2].tolist()  # nested rows, as some writers do
    file = tmp_path / "hand.json"
    file.write_text(json.dumps(data))
    result = run_cli("render", str(run_copy), "--camera-path", str(file), "--pairing", "target:original", "--renderer", "exact")
    assert result.returncode == 0, result.stderr
    folder = run_copy / "renders" / "target_original"
    frames = [iio.imread(folder / f"hand_{i:03d}.png") for i in range(3)]
    assert all(f.shape == (20, 30, 3) for f in frames) and not (folder / "hand_003.png").exists()
    assert frames[0].std() > 5 and np.abs(frames[0].astype(int) - frames[2].astype(int)).mean() > 2  # a scene, seen moving
    video = iio.imread(folder / "hand.mp4")
    assert video.shape[0] == 3 and iio.immeta(folder / "hand.mp4")["fps"] == 6
    # The kit's scenes are Blender format: their own frame is the run's, so the dataset frame renders the same.
    result = run_cli(
        "render",
        str(run_copy),
        "--camera-path",
        str(file),
        "--pairing",
        "target:original",
        "--renderer",
        "exact",
        "--camera-path-frame",
        "dataset",
    )
    assert result.returncode == 0, result.stderr
    assert np.array_equal(iio.imread(folder / "hand_001.png"), frames[1])

    # Twice the size: the same view, sharper (box-filtered back down, it matches the small frame).
    result = run_cli(
        "render", str(run_copy), "--camera-path", str(file), "--pairing", "target:original", "--renderer", "exact", "--size", "40"
    )
    assert result.returncode == 0, result.stderr
    big = iio.imread(folder / "hand_000.png")
    assert big.shape == (40, 60, 3)
    down = big.astype(np.float64).reshape(20, 2, 30, 2, 3).mean((1, 3)) / 255.0
    small = torch.tensor(frames[0] / 255.0)
    match = psnr(torch.tensor(down), small)
    shifted = psnr(torch.tensor(down[:, 1:]), small[:, :-1])  # the same frames one pixel apart: what a wrong centre gives
    assert match > 25.0 and match > shifted + 3.0, (match, shifted)  # measured 31.5 against 22.2 dB


@pytest.mark.slow
def test_render_paths_from_the_cameras_and_mistakes(run_copy, tmp_path):
    for path in ("orbit", "interpolate"):
        result = run_cli("render", str(run_copy), "--path", path, "--frames", "3", "--size", "32x16", "--fps", "10")
        assert result.returncode == 0, result.stderr
        folder = run_copy / "renders" / "target_recolour"
        assert [iio.imread(folder / f"{path}_{i:03d}.png").shape for i in range(3)] == [(16, 32, 3)] * 3
        assert iio.immeta(folder / f"{path}.mp4")["fps"] == 10
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert_one_line_error(run_cli("render", str(run_copy), "--camera-path", str(bad)), f"{bad}: not a JSON file")
    assert_one_line_error(run_cli("render", str(run_copy), "--camera-path", str(tmp_path / "none.json")), "no such camera-path file")
    assert_one_line_error(run_cli("render", str(run_copy), "--path", "orbit", "--size", "big"), "--size: expected a height")
    assert_one_line_error(
        run_cli("render", str(run_copy), "--path", "orbit", "--camera-path", str(bad)), "--path: cannot go with --camera-path"
    )
