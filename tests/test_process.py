"""`fastjoint process`: photos or a video into a COLMAP dataset, through real pycolmap, read back by the loader."""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from test_cli import assert_one_line_error

from conftest import run_cli
from fastjoint.data import load_split
from fastjoint.process import LOW_TEXTURE_FEATURES, LOW_TEXTURE_PEAK, choose_frames, median_features, sharpness

VIEWS = 24
WIDTH, HEIGHT, FOCAL = 160, 120, 140.0


def solid_texture(points: np.ndarray, seed: int = 0) -> np.ndarray:  # [..., 3] -> [..., 3] in [0, 1]
    """Four octaves of 3-D value noise: a texture on every surface, rich enough for SIFT."""
    table = np.random.default_rng(seed).random((64, 64, 64, 3))
    total = np.zeros(points.shape[:-1] + (3,))
    for octave, scale in enumerate((3.0, 7.0, 16.0, 37.0)):
        q = points * scale + 17.0 * octave
        corner = np.floor(q).astype(int)
        f = q - corner
        f = f * f * (3 - 2 * f)
        for offset in np.ndindex(2, 2, 2):
            weight = np.prod([f[..., a] if offset[a] else 1 - f[..., a] for a in range(3)], axis=0)
            total += weight[..., None] * table[tuple((corner[..., a] + offset[a]) % 64 for a in range(3))] / (octave + 1)
    return np.clip(total / 2.08, 0.0, 1.0)


def camera_centre(k: int) -> np.ndarray:
    """Half an orbit around a box on a ground plane, bobbing up and down."""
    angle = math.pi * k / VIEWS
    return np.array([3.0 * math.cos(angle), 3.0 * math.sin(angle), 1.6 + 0.3 * math.sin(3 * angle)])


def render_view(eye: np.ndarray, scale: int = 1) -> np.ndarray:  # [H, W, 3] uint8
    """A pinhole view of a textured box on a textured ground plane, looking at the box (`scale` times the size)."""
    width, height, focal = WIDTH * scale, HEIGHT * scale, FOCAL * scale
    forward = np.array([0.0, 0.0, 0.3]) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    d = ((xs - width / 2) / focal)[..., None] * right - ((ys - height / 2) / focal)[..., None] * up + forward
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ground = -eye[2] / d[..., 2]
        near = np.minimum((np.array([-0.5, -0.4, 0.0]) - eye) / d, (np.array([0.5, 0.4, 0.8]) - eye) / d).max(-1)
        far = np.maximum((np.array([-0.5, -0.4, 0.0]) - eye) / d, (np.array([0.5, 0.4, 0.8]) - eye) / d).min(-1)
    hit = np.full((height, width), np.inf)
    on_ground = (ground > 0) & (np.abs(eye[:2] + ground[..., None] * d[..., :2]) < 3).all(-1)
    hit = np.where(on_ground, ground, hit)
    hit = np.where((near < far) & (near > 0) & (near < hit), near, hit)
    points = eye + np.where(np.isfinite(hit), hit, 0.0)[..., None] * d
    colour = np.where(np.isfinite(hit)[..., None], solid_texture(points), 0.6)
    return (colour * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for k in range(VIEWS):
        iio.imwrite(folder / f"v_{k:03d}.png", render_view(camera_centre(k)))
    return folder


def similarity_residual(found: np.ndarray, truth: np.ndarray) -> float:
    """The largest distance between `truth` and `found` aligned to it by the best similarity (Umeyama),
    over the mean distance of `truth` from its centre."""
    a, b = found - found.mean(0), truth - truth.mean(0)
    u, s, vt = np.linalg.svd(b.T @ a)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation, scale = u @ d @ vt, (s * np.diag(d)).sum() / (a**2).sum()
    return float(np.linalg.norm(scale * a @ rotation.T - b, axis=1).max() / np.linalg.norm(b, axis=1).mean())


def poses_against_truth(folder: Path, view_of=lambda number: number) -> tuple[float, object]:
    """The cameras' residual against the truth (`view_of` maps an image's number to its view); the camera."""
    found, truth = [], []
    for split in ("train", "test"):
        views = load_split(folder, split)
        found += [pose[:3, 3].numpy() for pose in views.poses]
        truth += [camera_centre(view_of(int(Path(name).stem.split("_")[-1]))) for name in views.names]
    return similarity_residual(np.array(found, dtype=np.float64), np.array(truth)), views.camera


@pytest.mark.slow
def test_photos_become_a_dataset_with_the_true_cameras(photos, tmp_path):
    out = tmp_path / "dataset"
    result = run_cli("process", str(photos), str(out))
    assert result.returncode == 0, result.stderr
    assert f"{VIEWS} of {VIEWS} images registered" in result.stdout
    # 160 x 120 px give a median of 258 SIFT features at COLMAP's threshold: extracted again lower
    assert f"(few SIFT features: extracted at peak threshold {LOW_TEXTURE_PEAK})" in result.stdout
    assert median_features(out / "database.db") < 1.5 * LOW_TEXTURE_FEATURES
    assert (out / "sparse" / "0").is_dir() and len(list((out / "images").iterdir())) == VIEWS
    assert not out.with_name("dataset.partial").exists()
    residual, camera = poses_against_truth(out)
    assert residual < 0.05, residual  # measured 1.5% of the cameras' distance from their centre (2.1% at COLMAP's threshold)
    assert abs(camera.focal - FOCAL) / FOCAL < 0.05, camera  # measured 137.4 against 140
    again = run_cli("process", str(photos), str(out))
    assert_one_line_error(again, f"{out}: already exists")


@pytest.mark.slow
def test_photos_with_many_features_keep_colmaps_threshold(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(0, VIEWS, 2):  # 12 views, four times the size
        iio.imwrite(photos / f"v_{k:03d}.png", render_view(camera_centre(k), scale=4))
    out = tmp_path / "dataset"
    result = run_cli("process", str(photos), str(out))
    assert result.returncode == 0, result.stderr
    assert f"{VIEWS // 2} of {VIEWS // 2} images registered" in result.stdout
    assert "few SIFT features" not in result.stdout
    assert median_features(out / "database.db") >= LOW_TEXTURE_FEATURES  # measured 1,534
    residual, _ = poses_against_truth(out)
    assert residual < 0.05, residual  # measured 0.12%


@pytest.mark.slow
def test_a_video_gives_its_sharpest_frames(tmp_path):
    frames = []
    for k in range(VIEWS):
        sharp = render_view(camera_centre(k))
        blurred = np.mean([np.roll(sharp, shift, axis=1) for shift in range(-4, 5)], axis=0).astype(np.uint8)
        frames += [blurred, sharp, blurred]  # every third frame is the sharp one
    frames[:3] = [np.zeros_like(frames[0])] * 3  # a black start: never chosen
    video = tmp_path / "walk.mp4"
    # At ffmpeg's default quality the compression moves the cameras by 3.6 to 8% (four runs); at the best, 0.7%.
    iio.imwrite(video, np.stack(frames), fps=24, codec="libx264", extension=".mp4", macro_block_size=8, quality=10)
    chosen = choose_frames(video, VIEWS)
    assert chosen == [3 * k + 1 for k in range(1, VIEWS)], chosen  # the sharp one of each stretch, no black frame
    out = tmp_path / "dataset"
    result = run_cli("process", str(video), str(out), "--frames", str(VIEWS))
    assert result.returncode == 0, result.stderr
    residual, _ = poses_against_truth(out, lambda frame: (frame - 1) // 3)  # frame_00004.png is view 1
    assert residual < 0.05, residual  # measured 0.65 to 0.68%


def test_sharpness_orders_blur():
    image = render_view(camera_centre(3))
    blurred = np.mean([np.roll(image, shift, axis=0) for shift in range(-3, 4)], axis=0)
    assert sharpness(image) > 2 * sharpness(blurred) > 0


@pytest.mark.slow
def test_mistakes_are_one_line(tmp_path):
    assert_one_line_error(run_cli("process", str(tmp_path / "nothing"), str(tmp_path / "out")), "no such folder or video")
    black = tmp_path / "black.mp4"
    iio.imwrite(black, np.zeros((10, 64, 64, 3), np.uint8), fps=10, codec="libx264", extension=".mp4")
    assert_one_line_error(
        run_cli("process", str(black), str(tmp_path / "out")), f"{black}: no usable frames (10 frames, none with any contrast)"
    )
    noise = tmp_path / "noise"
    noise.mkdir()
    rng = np.random.default_rng(0)
    for k in range(10):  # unrelated pictures: nothing to match
        iio.imwrite(noise / f"n_{k}.png", rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    assert_one_line_error(run_cli("process", str(noise), str(tmp_path / "out")), "COLMAP registered", "of 10 images (at least 8 needed)")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()  # nothing half-made left
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert_one_line_error(run_cli("process", str(text), str(tmp_path / "out")), "not a folder of photos or a video")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_cli("process", str(empty), str(tmp_path / "out")), "no photos in the folder")
