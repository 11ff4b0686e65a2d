"""Cameras with distortion, the nerfstudio and COLMAP readers, recentring, and the scene
kit's datasets written in all three formats loading to the same rays and pixels."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from fastjoint import cli
from fastjoint.cli import _parse
from fastjoint.config import DataConfig, StyleData
from fastjoint.data import (
    DEFAULT_FORMAT,
    FORMATS,
    SPLITS,
    Camera,
    DatasetFormat,
    WrittenViews,
    detect_format,
    image_rays,
    load_split,
    look_at,
    pixel_rays,
)
from fastjoint.data.cameras import distort, undistort
from fastjoint.data.colmap import (
    ColmapCamera,
    ColmapImage,
    from_pose,
    read_model,
    to_pose,
    write_model,
)
from fastjoint.data.recentre import CAMERA_RADIUS, scene_transform
from fastjoint.datasets import check_test_splits, load_scene_split
from fastjoint.errors import UserError
from fastjoint.scenes import make_datasets
from fastjoint.train import RaySampler

FIXTURES = Path(__file__).parent / "fixtures"
CENTRE = np.array([1.0, 2.0, 0.5])  # what the hand-made captures look at
RADIUS = 3.0


# --- cameras ---------------------------------------------------------------------------


def random_distortion(rng: np.random.Generator) -> tuple[float, ...]:
    return (rng.uniform(-0.3, 0.3), rng.uniform(-0.1, 0.1), rng.uniform(-0.02, 0.02), rng.uniform(-0.02, 0.02), rng.uniform(-0.05, 0.05))


def test_camera_defaults_and_scaling():
    assert Camera(8, 6, 5.0) == Camera(8, 6, 5.0, 5.0, 4.0, 3.0, (0, 0, 0, 0, 0))
    assert Camera(8, 6, 5.0) != Camera(8, 6, 5.0, cx=4.5)
    half = Camera(8, 6, 5.0, 7.0, 3.5, 2.5, (0.1, 0, 0, 0, 0)).scaled(2)
    assert half == Camera(4, 3, 2.5, 3.5, 1.75, 1.25, (0.1, 0, 0, 0, 0))


def test_undistort_inverts_distort():
    rng = np.random.default_rng()
    distortion = random_distortion(rng)
    x, y = (torch.from_numpy(rng.uniform(-0.6, 0.6, 1000)) for _ in range(2))
    xd, yd = distort(x, y, distortion)
    assert (xd - x).abs().max() > 1e-3  # the lens does bend the points
    ux, uy = undistort(xd, yd, distortion)
    torch.testing.assert_close(ux, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(uy, y, rtol=0, atol=1e-10)


def test_rays_pass_through_the_points_that_project_to_their_pixels():
    """Project world points with OpenCV's model (fx != fy, off-centre, distorted); the ray
    of the pixel each lands on must point at it."""
    rng = np.random.default_rng()
    camera = Camera(64, 48, rng.uniform(50, 70), rng.uniform(50, 70), rng.uniform(28, 36), rng.uniform(20, 28), random_distortion(rng))
    pose = look_at(torch.tensor([3.0, -2.0, 1.0]), torch.tensor([0.1, 0.2, -0.1])).double()
    points = torch.from_numpy(rng.uniform(-0.4, 0.4, (500, 3)))
    local = (points - pose[:3, 3]) @ pose[:3, :3]  # OpenGL camera coordinates
    x, y = local[:, 0] / -local[:, 2], -local[:, 1] / -local[:, 2]  # OpenCV's normalised image plane
    xd, yd = distort(x, y, camera.distortion)
    px, py = camera.focal * xd + camera.cx, camera.focal_y * yd + camera.cy
    origins, dirs = pixel_rays(pose[None].expand(500, 4, 4).float(), px.float(), py.float(), camera)
    expected = torch.nn.functional.normalize(points - pose[:3, 3], dim=-1).float()
    torch.testing.assert_close(dirs, expected, rtol=0, atol=2e-6)
    torch.testing.assert_close(origins, pose[:3, 3].float().expand(500, 3))


def test_pinhole_rays_are_the_centred_formula():
    """Blender-format cameras give the rays they gave before fx, fy, cx, cy existed: the centred formula.

    Not bit for bit: image_rays runs a batched 3x3 product (einsum over [B, 3, 3]) whose
    summation order and use of fused multiply-adds depend on the CPU's vector unit, so two
    float32 formulas agree here but may differ in the last bits on another machine. The
    formula is written in float64 instead, and the float32 rays must be within 1e-6 of it:
    about 8 float32 ulps of a unit component (2^-23 = 1.2e-7), room for the roundings of
    (x - cx) / f, of a 3-term sum in any order and of the normalisation (1.5e-7 seen). A
    principal point or focal length off by even half a pixel moves the rays by about 1e-2.
    """
    camera = Camera(40, 30, 37.3)
    generator = torch.Generator().manual_seed(0)
    pose = look_at(torch.randn(3, generator=generator) * 4, torch.zeros(3))
    _, dirs = image_rays(pose, camera)
    ys, xs = torch.meshgrid(torch.arange(30.0, dtype=torch.float64) + 0.5, torch.arange(40.0, dtype=torch.float64) + 0.5, indexing="ij")
    xs, ys = xs.reshape(-1), ys.reshape(-1)
    local = torch.stack([(xs - 0.5 * 40) / 37.3, -(ys - 0.5 * 30) / 37.3, -torch.ones_like(xs)], dim=-1)
    expected = torch.nn.functional.normalize(local @ pose[:3, :3].double().T, dim=-1)
    assert dirs.dtype == torch.float32
    torch.testing.assert_close(dirs.double(), expected, rtol=0, atol=1e-6)


# --- hand-made captures ----------------------------------------------------------------


def orbit(n: int, seed: int = 0) -> np.ndarray:  # [n, 4, 4] OpenGL camera-to-world around CENTRE
    rng = np.random.default_rng(seed)
    poses = []
    for i in range(n):
        azimuth, elevation = 2 * math.pi * i / n, rng.uniform(-0.3, 0.9)
        eye = CENTRE + RADIUS * np.array(
            [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)]
        )
        poses.append(look_at(torch.from_numpy(eye).float(), torch.from_numpy(CENTRE).float()).double().numpy())
    return np.stack(poses)


def write_images(folder: Path, names: list[str], size=(10, 6), channels=3, seed=0) -> None:
    rng = np.random.default_rng(seed)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(folder / name, rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8))


INTRINSICS = {"fl_x": 9.0, "fl_y": 8.0, "cx": 5.2, "cy": 2.9, "w": 10, "h": 6}


def write_nerfstudio(root: Path, n=10, per_frame=False, extra=None, size=(10, 6), model="OPENCV") -> dict:
    names = [f"images/f_{i:02d}.png" for i in range(n)]
    write_images(root, names, size)
    intrinsics = {**INTRINSICS, "camera_model": model, "k1": 0.05, "p2": 0.01}
    frames = [{"file_path": name, "transform_matrix": pose.tolist()} for name, pose in zip(names, orbit(n))]
    meta = {"frames": frames, **(extra or {})}
    if per_frame:
        for frame in frames:
            frame.update(intrinsics)
    else:
        meta.update(intrinsics)
    (root / "transforms.json").write_text(json.dumps(meta))
    return meta


def test_nerfstudio_intrinsics_recentring_and_default_split(tmp_path):
    write_nerfstudio(tmp_path)
    assert detect_format(tmp_path) == "nerfstudio"
    train, test = load_split(tmp_path, "train"), load_split(tmp_path, "test")
    assert train.camera == Camera(10, 6, 9.0, 8.0, 5.2, 2.9, (0.05, 0.0, 0.0, 0.01, 0.0))
    # Every 8th view by name is held out: f_00 and f_08; val is the same views.
    assert test.names == ("images/f_00.png", "images/f_08.png") and load_split(tmp_path, "val").names == test.names
    assert len(train) == 8 and "images/f_00.png" not in train.names
    assert np.array_equal(test.pixels[1, ..., :3].numpy(), iio.imread(tmp_path / "images/f_08.png"))
    assert not test.transparent and torch.all(test.pixels[..., 3] == 255)
    # The cameras look at CENTRE from RADIUS: it becomes the origin, the radius 4.
    scale = CAMERA_RADIUS / RADIUS
    expected = np.diag([scale, scale, scale, 1.0])
    expected[:3, 3] = -scale * CENTRE
    np.testing.assert_allclose(train.transform.numpy(), expected, atol=1e-6)
    poses = orbit(10)
    np.testing.assert_allclose(test.poses[1, :3, 3].numpy(), scale * (poses[8, :3, 3] - CENTRE), atol=1e-5)
    np.testing.assert_allclose(test.poses[1, :3, :3].numpy(), poses[8, :3, :3], atol=1e-6)  # no rotation


def test_nerfstudio_per_frame_intrinsics_split_lists_and_applied_transform(tmp_path):
    write_nerfstudio(tmp_path / "a")
    applied = [[0.0, 1.0, 0.0, 0.3], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 2.0]]
    lists = {"train_filenames": [f"images/f_{i:02d}.png" for i in (1, 2, 3, 4, 5, 6, 7, 9)], "test_filenames": ["./images/f_00.png"]}
    write_nerfstudio(tmp_path / "b", per_frame=True, extra={"applied_transform": applied, **lists})
    a, b = load_split(tmp_path / "a", "train"), load_split(tmp_path / "b", "train")
    assert a.camera == b.camera and a.names == b.names
    assert torch.equal(a.poses, b.poses)  # the poses already include applied_transform
    test = load_split(tmp_path / "b", "test")
    assert test.names == ("images/f_00.png",) and load_split(tmp_path / "b", "val").names == test.names
    half = load_split(tmp_path / "a", "test", downscale=2)
    assert half.camera == a.camera.scaled(2) and half.pixels.shape == (2, 3, 5, 4)


def test_images_n_folders_are_read_when_the_downscale_matches(tmp_path):
    """nerfstudio's (and LLFF's) images_N/: taken as they are for downscale N, instead of shrinking images/."""
    write_nerfstudio(tmp_path / "a")
    full = load_split(tmp_path / "a", "train")
    shrunk = load_split(tmp_path / "a", "train", downscale=2)
    (tmp_path / "a" / "images_2").mkdir()
    marked = {}
    for name in full.names:  # the capture's own small copies: a different picture, so that reading them shows
        image = np.full((3, 5, 3), 7 * len(marked), dtype=np.uint8)
        iio.imwrite(tmp_path / "a" / "images_2" / Path(name).name, image)
        marked[name] = image
    small = load_split(tmp_path / "a", "train", downscale=2)
    assert small.camera == shrunk.camera and small.names == full.names
    assert torch.equal(small.pixels[..., :3], torch.from_numpy(np.stack([marked[n] for n in full.names])))
    assert not torch.equal(small.pixels, shrunk.pixels)
    (tmp_path / "a" / "images_2" / Path(full.names[0]).name).unlink()  # one missing: images/ shrunk as read
    assert torch.equal(load_split(tmp_path / "a", "train", downscale=2).pixels, shrunk.pixels)
    iio.imwrite(tmp_path / "a" / "images_2" / Path(full.names[0]).name, np.zeros((2, 5, 3), np.uint8))  # the wrong size
    with pytest.raises(UserError, match=r"images_2/.*: image is 5x2 but the dataset says 5x3"):
        load_split(tmp_path / "a", "train", downscale=2)


def test_each_scene_its_own_downscale(tmp_path):
    data = DataConfig(target="t", reference="r", styles={"blue": StyleData(reference="rb")}, downscale=2, target_downscale=8)
    assert (data.downscale_of("target"), data.downscale_of("reference")) == (8, 2)
    assert (data.downscale_key("target"), data.downscale_key("reference")) == ("data.target_downscale", "data.downscale")
    write_nerfstudio(tmp_path / "a")
    with pytest.raises(UserError, match=r"^data.target_downscale: 8 does not divide the 10x6 images"):
        load_scene_split(data, "target", tmp_path / "a", "train")
    assert load_scene_split(data, "reference", tmp_path / "a", "train").pixels.shape[1:3] == (3, 5)
    with pytest.raises(UserError, match="data.reference_downscale: must be at least 1"):
        DataConfig(target="t", reference="r", styles={"blue": StyleData(reference="rb")}, reference_downscale=-1)


def mutate_json(path: Path, change) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.pop("fl_x"), r"frames\[0\]: no 'fl_x' \(neither in the frame nor at the top"),
        (
            lambda m: m.update(camera_model="OPENCV_FISHEYE"),
            r"transforms.json: 'camera_model': camera model 'OPENCV_FISHEYE' is not supported",
        ),
        (lambda m: m.update(w=12), r"f_01.png: image is 10x6 but the dataset says 12x6"),
        (
            lambda m: m["frames"][3].update(fl_x=9.5),
            r"frames\[3\] has other intrinsics than frames\[1\]; fastjoint needs one camera per split",
        ),
        (lambda m: m.update(train_filenames=["images/nope.png"]), r"'train' lists 'images/nope.png', which is not one of its images"),
        (lambda m: m.update(applied_transform=[[1, 0], [0, 1]]), r"applied_transform must be a 4x4 matrix"),
        (lambda m: m["frames"][2]["transform_matrix"][0].__setitem__(3, float("nan")), r"frames\[2\].transform_matrix contains NaN"),
        (lambda m: m["frames"][5].update(file_path="images/gone.png"), r"gone.png: image not found \(.*frames\[5\].file_path"),
        (lambda m: m.update(k1="big"), r"transforms.json: 'k1' must be a number"),
    ],
)
def test_nerfstudio_mistakes_name_the_file_and_key(tmp_path, change, message):
    write_nerfstudio(tmp_path)
    mutate_json(tmp_path / "transforms.json", change)
    with pytest.raises(UserError, match=message):
        load_split(tmp_path, "train")


def colmap_capture(root: Path, binary: bool, camera: ColmapCamera, poses: np.ndarray, points=None) -> list[str]:
    names = [f"f_{i:02d}.png" for i in range(len(poses))]
    write_images(root / "images", names)
    images = [ColmapImage(i + 5, *from_pose(pose), camera.camera_id, name) for i, (name, pose) in enumerate(zip(names, poses))]
    write_model(root / "sparse" / "0", [camera], images, points, binary=binary)
    return names


def test_colmap_text_and_binary_read_the_same_and_match_nerfstudio(tmp_path):
    camera = ColmapCamera(3, "OPENCV", 10, 6, (9.0, 8.0, 5.2, 2.9, 0.05, 0.0, 0.0, 0.01))
    points = np.random.default_rng().normal(CENTRE, 0.3, (50, 3))
    colmap_capture(tmp_path / "text", False, camera, orbit(10), points)
    colmap_capture(tmp_path / "binary", True, camera, orbit(10), points)
    write_nerfstudio(tmp_path / "ns")
    assert detect_format(tmp_path / "binary") == "colmap" and not (tmp_path / "binary/sparse/0/images.txt").exists()
    np.testing.assert_array_equal(read_model(tmp_path / "binary/sparse/0").points, points)
    for split in ("train", "test"):
        text, binary, ns = (load_split(tmp_path / name, split) for name in ("text", "binary", "ns"))
        assert text.camera == binary.camera == ns.camera
        assert torch.equal(text.poses, binary.poses) and torch.equal(text.pixels, binary.pixels)
        assert torch.equal(text.pixels, ns.pixels) and [n.split("/")[-1] for n in text.names] == [n.split("/")[-1] for n in ns.names]
        torch.testing.assert_close(text.poses, ns.poses, rtol=0, atol=1e-5)  # OpenCV axes converted to OpenGL


@pytest.mark.parametrize(
    "model, params, expected",
    [
        ("SIMPLE_PINHOLE", (9.0, 5.5, 3.5), Camera(10, 6, 9.0, 9.0, 5.5, 3.5)),
        ("PINHOLE", (9.0, 8.0, 5.5, 3.5), Camera(10, 6, 9.0, 8.0, 5.5, 3.5)),
        ("SIMPLE_RADIAL", (9.0, 5.5, 3.5, -0.1), Camera(10, 6, 9.0, 9.0, 5.5, 3.5, (-0.1, 0, 0, 0, 0))),
        ("RADIAL", (9.0, 5.5, 3.5, -0.1, 0.02), Camera(10, 6, 9.0, 9.0, 5.5, 3.5, (-0.1, 0.02, 0, 0, 0))),
        ("OPENCV", (9.0, 8.0, 5.5, 3.5, -0.1, 0.02, 0.003, 0.004), Camera(10, 6, 9.0, 8.0, 5.5, 3.5, (-0.1, 0.02, 0.003, 0.004, 0))),
    ],
)
def test_colmap_camera_models(tmp_path, model, params, expected):
    colmap_capture(tmp_path, False, ColmapCamera(1, model, 10, 6, params), orbit(3))
    assert load_split(tmp_path, "train").camera == expected


def test_colmap_pose_round_trip():
    rng = np.random.default_rng()
    for _ in range(20):
        pose = look_at(torch.from_numpy(rng.normal(0, 3, 3)).float(), torch.from_numpy(rng.normal(0, 0.5, 3)).float()).double().numpy()
        qvec, tvec = from_pose(pose)
        assert qvec[0] >= 0 and abs(np.linalg.norm(qvec) - 1) < 1e-12
        np.testing.assert_allclose(to_pose(qvec, tvec), pose, atol=1e-6)


def test_forward_facing_capture_centres_on_the_points():
    """Parallel viewing axes do not cross: the points' median is the centre."""
    poses = np.stack([np.eye(4)] * 5)
    poses[:, 0, 3] = np.linspace(-1, 1, 5)  # a row of cameras looking down -z
    points = np.array([[0.0, 0.0, -10.0], [1.0, 1.0, -12.0], [-1.0, 0.0, -11.0], [0.0, -1.0, -11.0], [50.0, 50.0, -500.0]])
    transform = scene_transform(poses, points)
    centre = -transform[:3, 3] / transform[0, 0]
    np.testing.assert_allclose(centre, [0.0, 0.0, -11.0])  # the outlier does not move it
    np.testing.assert_allclose(transform[0, 0], CAMERA_RADIUS / np.linalg.norm(poses[:, :3, 3] - centre, axis=1).mean())
    no_points = scene_transform(poses)
    np.testing.assert_allclose(-no_points[:3, 3] / no_points[0, 0], [0.0, 0.0, 0.0], atol=1e-12)  # mean camera position


def write_text_capture(root: Path) -> None:
    colmap_capture(root, False, ColmapCamera(1, "PINHOLE", 10, 6, (9.0, 8.0, 5.0, 3.0)), orbit(4))


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda r: (r / "sparse/0/cameras.txt").write_text("1 OPENCV_FISHEYE 10 6 9 9 5 3 0 0 0 0\n"),
            r"cameras.txt: camera 1 uses model OPENCV_FISHEYE, not supported",
        ),
        (lambda r: (r / "sparse/0/cameras.txt").write_text("1 PINHOLE 10 6 9 x 5 3\n"), r"cameras.txt: line 1: not a number"),
        (
            lambda r: (r / "sparse/0/cameras.txt").write_text("1 PINHOLE 10 6 9 5 3\n"),
            r"cameras.txt: line 1: model PINHOLE takes 4 parameters, got 3",
        ),
        (
            lambda r: (r / "sparse/0/cameras.txt").write_text("2 PINHOLE 10 6 9 8 5 3\n"),
            r"images.txt: image 'f_01.png' uses camera 1, which the cameras file lacks",
        ),
        (lambda r: (r / "images/f_01.png").unlink(), r"f_01.png: image not found \(.*images.txt names 'f_01.png'\)"),
        (lambda r: (r / "sparse/0/images.txt").unlink(), r"images.bin: not found \(a COLMAP model needs images.bin or images.txt\)"),
        (
            lambda r: (r / "splits.json").write_text('{"train_filenames": 3}'),
            r"splits.json: 'train_filenames' must be a list of file names",
        ),
    ],
)
def test_colmap_mistakes_name_the_file(tmp_path, change, message):
    write_text_capture(tmp_path)
    change(tmp_path)
    with pytest.raises(UserError, match=message):
        load_split(tmp_path, "train")


def test_truncated_binary_model(tmp_path):
    colmap_capture(tmp_path, True, ColmapCamera(1, "PINHOLE", 10, 6, (9.0, 8.0, 5.0, 3.0)), orbit(4))
    path = tmp_path / "sparse/0/images.bin"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(UserError, match=r"images.bin: truncated at byte \d+"):
        load_split(tmp_path, "train")


def test_format_detection(tmp_path):
    with pytest.raises(UserError, match=r"not a dataset \(expected transforms_train.json for Blender format, transforms.json"):
        detect_format(tmp_path)
    write_text_capture(tmp_path / "flat")
    shutil.move(tmp_path / "flat/sparse/0", tmp_path / "flat/sparse0")
    shutil.rmtree(tmp_path / "flat/sparse")
    shutil.move(tmp_path / "flat/sparse0", tmp_path / "flat/sparse")  # sparse/ holds the model itself
    assert detect_format(tmp_path / "flat") == "colmap" and len(load_split(tmp_path / "flat", "train")) == 3


# --- the scene kit in every format -----------------------------------------------------


@pytest.fixture(scope="module")
def kit_formats(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    return {f: make_datasets(str(FIXTURES / "tiny.toml"), root=root, format=f) for f in FORMATS}


def test_kit_formats_load_the_same_pixels_and_rays(kit_formats):
    assert [p.name for p in kit_formats.values()] == ["tiny", "tiny-nerfstudio", "tiny-colmap"]
    for fmt, folder in kit_formats.items():
        assert detect_format(folder / "target" / "original") == fmt
    for scene, style in (("target", "original"), ("reference", "recolour")):
        for split in ("train", "val", "test"):
            blender = load_split(kit_formats["blender"] / scene / style, split)
            for fmt in ("nerfstudio", "colmap"):
                other = load_split(kit_formats[fmt] / scene / style, split)
                assert torch.equal(other.pixels, blender.pixels) and other.camera == blender.camera
                # Same rays, up to the loader's recentring (here within float error of identity:
                # every kit camera looks at the origin from radius 4).
                transform = other.transform.float()
                for index in (0, len(blender) - 1):
                    o_b, d_b = image_rays(blender.poses[index], blender.camera)
                    o, d = image_rays(other.poses[index], other.camera)
                    torch.testing.assert_close(o, o_b @ transform[:3, :3].T + transform[:3, 3], rtol=0, atol=2e-5)
                    torch.testing.assert_close(d, d_b, rtol=0, atol=1e-6)
                torch.testing.assert_close(transform, torch.eye(4), rtol=0, atol=1e-6)


def test_kit_formats_train_on_the_same_rays(kit_formats):
    """The trainer's ray sampler draws the same rays and targets from every format."""
    samples = {}
    for fmt, folder in kit_formats.items():
        sampler = RaySampler(load_split(folder / "reference" / "original", "train"), torch.device("cpu"))
        samples[fmt] = sampler.sample(256, torch.Generator().manual_seed(7))
    for fmt in ("nerfstudio", "colmap"):
        for a, b in zip(samples[fmt], samples["blender"]):
            torch.testing.assert_close(a, b, rtol=0, atol=2e-5)
        assert torch.equal(samples[fmt][2], samples["blender"][2])  # RGBA targets, exactly


def test_colmap_binary_from_the_kit(kit_formats, tmp_path):
    """The kit's text model, converted to binary with our writer, loads to the same split."""
    source = kit_formats["colmap"] / "target" / "original"
    copy = tmp_path / "binary"
    shutil.copytree(source, copy)
    model = read_model(copy / "sparse" / "0")
    for path in (copy / "sparse" / "0").glob("*.txt"):
        path.unlink()
    write_model(copy / "sparse" / "0", list(model.cameras.values()), model.images, model.points, binary=True)
    for split in ("train", "test"):
        a, b = load_split(source, split), load_split(copy, split)
        assert torch.equal(a.poses, b.poses) and torch.equal(a.pixels, b.pixels) and a.camera == b.camera


# --- the table of formats --------------------------------------------------------------


def write_views(record: DatasetFormat, folder: Path, seed: int = 0) -> WrittenViews:
    """A small dataset written by a format's record: random RGBA images, an orbit per split."""
    rng = np.random.default_rng(seed)
    counts = {"train": 5, "val": 2, "test": 3}
    poses = {split: orbit(n, seed=seed + i) for i, (split, n) in enumerate(counts.items())}
    names = {split: [record.image_name(split, i) for i in range(n)] for split, n in counts.items()}
    for split in SPLITS:
        for name in names[split]:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            iio.imwrite(folder / name, rng.integers(0, 256, (6, 10, 4), dtype=np.uint8))
    views = WrittenViews(10, 6, rng.uniform(0.5, 1.2), poses, names)
    record.write(folder, views)
    return views


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_round_trips_through_its_record(tmp_path, name):
    """What a record writes, detection finds (in table order) and loading reads back: the same
    images, camera and views."""
    record = FORMATS[name]
    assert record.name == name
    views = write_views(record, tmp_path)
    assert detect_format(tmp_path) == name and record.detect(tmp_path)
    assert [other for other in FORMATS.values() if other.detect(tmp_path)][0] is record
    for split in SPLITS:
        loaded = load_split(tmp_path, split)
        assert loaded.names == tuple(views.names[split]) and loaded.camera == views.camera
        for i, image in enumerate(views.names[split]):
            assert np.array_equal(loaded.pixels[i].numpy(), iio.imread(tmp_path / image))
        # The same poses, up to the loader's recentring.
        transform = loaded.transform.numpy()
        moved = np.einsum("ij,njk->nik", transform, views.poses[split])
        np.testing.assert_allclose(loaded.poses[:, :3, 3].numpy(), moved[:, :3, 3], atol=1e-5)
        rotation = moved[:, :3, :3] / np.cbrt(np.linalg.det(transform[:3, :3]))
        np.testing.assert_allclose(loaded.poses[:, :3, :3].numpy(), rotation, atol=1e-5)
        if record.split_file is not None:
            assert record.split_file(tmp_path, split).is_file()


def test_the_cli_offers_the_table_of_formats():
    for name in FORMATS:
        assert _parse(["scenes", "make", "demo", "--format", name]).action.format == name
    assert _parse(["scenes", "make", "demo"]).action.format == cli.DEFAULT_FORMAT == DEFAULT_FORMAT
    with pytest.raises(UserError, match="invalid choice 'xyz' for argument '--format'"):
        _parse(["scenes", "make", "demo", "--format", "xyz"])


@pytest.fixture
def toy_first():
    """The table with a toy format first: Blender's files plus a marker, detected before Blender's."""

    def write(root: Path, views: WrittenViews) -> None:
        FORMATS["blender"].write(root, views)
        (root / "toy.txt").write_text("toy\n")

    toy = dataclasses.replace(
        FORMATS["blender"], name="toy", expected="toy.txt for the toy format", detect=lambda root: (root / "toy.txt").is_file(), write=write
    )
    saved = dict(FORMATS)
    FORMATS.clear()
    FORMATS.update({"toy": toy, **saved})
    yield toy
    FORMATS.clear()
    FORMATS.update(saved)


def test_a_new_format_is_one_line_in_the_table(toy_first, tmp_path):
    """Detection, loading, the kit's writer, the CLI's --format and the test-split check follow the table."""
    assert _parse(["scenes", "make", "tiny", "--format", "toy"]).action.format == "toy"
    with pytest.raises(
        UserError, match=r"not a dataset \(expected toy.txt for the toy format, transforms_train.json for Blender format, .*, or sparse/0/"
    ):
        detect_format(tmp_path)
    folder = make_datasets(str(FIXTURES / "tiny.toml"), root=tmp_path, format="toy", size=8)
    dataset = folder / "target" / "original"
    assert folder.name == "tiny-toy-8px" and detect_format(dataset) == "toy"
    assert len(load_split(dataset, "test")) == 3
    data = DataConfig(target=str(dataset), reference=str(dataset), styles={"s": StyleData(reference=str(dataset))})
    check_test_splits(data)
    (dataset / "transforms_test.json").unlink()
    with pytest.raises(UserError, match=r"transforms_test.json: not found \(data.target needs a test split"):
        check_test_splits(data)
    shutil.rmtree(dataset)
    folder = make_datasets(str(FIXTURES / "tiny.toml"), root=tmp_path, format="nerfstudio", size=8)
    dataset = folder / "target" / "original"
    check_test_splits(DataConfig(target=str(dataset), reference=str(dataset), styles={"s": StyleData(reference=str(dataset))}))
