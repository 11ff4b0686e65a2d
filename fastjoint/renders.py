"""Pictures and videos of a trained run: RUN/renders/<scene>_<style>/."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import NamedTuple

import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor

from fastjoint.camera_path import PATHS, CameraPath, frame_size, interpolated_path, orbit_path, spiral_path, vertical_fov
from fastjoint.data import Camera, Split
from fastjoint.datasets import load_scene_split
from fastjoint.errors import UserError
from fastjoint.files import atomic_path, write_image
from fastjoint.log import warn_once
from fastjoint.pairing import ORIGINAL, Pairing
from fastjoint.run import LoadedRun

VIDEO_FPS = 24
FORWARD_FACING = 0.7  # length of the cameras' mean viewing direction below which a capture is not forward-facing
VIDEO_MIN_SIDE = 256  # small renders are enlarged (nearest neighbour) so a player shows them


class RenderOutputs(NamedTuple):
    folder: Path
    images: list[Path]
    video: Path | None


def camera_split(run: LoadedRun, pairing: Pairing, split: str) -> Split:
    """The views of a pairing's scene: its original-style dataset holds the cameras."""
    data = run.config.data
    return load_scene_split(data, pairing.scene, data.dataset(Pairing(pairing.scene, ORIGINAL)), split)


def orbit_around(split: Split, aabb: Tensor, n: int) -> Tensor:  # [n, 4, 4]
    """An orbit at the mean distance and elevation of the split's cameras, around the box centre."""
    return orbit_path(split.poses, (aabb[:3] + aabb[3:]) / 2, n)


def to_uint8(image: Tensor) -> np.ndarray:
    return (image.clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)


def write_video(path: Path, frames: list[np.ndarray], fps: float = VIDEO_FPS) -> None:
    """H.264 MP4 (imageio's ffmpeg plugin) at `fps`; small frames are enlarged, odd sizes padded."""
    height, width = frames[0].shape[:2]
    factor = max(1, math.ceil(VIDEO_MIN_SIDE / min(height, width)))
    stack = np.stack(frames)
    if factor > 1:
        stack = stack.repeat(factor, axis=1).repeat(factor, axis=2)
    pad_h, pad_w = stack.shape[1] % 2, stack.shape[2] % 2
    if pad_h or pad_w:
        stack = np.pad(stack, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with atomic_path(path) as partial:
        iio.imwrite(partial, stack, fps=fps, extension=".mp4")


def parse_size(text: str, key: str = "--size") -> tuple[int, int] | int:
    """`H` (a height; the width follows the aspect) or `WxH`; UserError names `key`."""
    parts = text.lower().split("x")
    if len(parts) in (1, 2) and all(p.isdigit() and int(p) > 0 for p in parts):
        return int(parts[0]) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    raise UserError(f"{key}: expected a height (e.g. 1080) or WIDTHxHEIGHT (e.g. 1920x1080), got {text!r}")


def sized_camera(camera: Camera, size: tuple[int, int] | int | None) -> Camera:
    """`camera` rendered at another size: the same vertical field of view and lens, the principal
    point and focal lengths scaled with the height (a WxH of another aspect widens or narrows the view)."""
    if size is None:
        return camera
    width, height = frame_size(camera.width, camera.height, size)
    factor = height / camera.height
    cx = camera.cx * factor + (width - camera.width * factor) / 2.0
    return Camera(width, height, camera.focal * factor, camera.focal_y * factor, cx, camera.cy * factor, camera.distortion)


def dataset_path(run: LoadedRun, pairing: Pairing, kind: str, frames: int, size: tuple[int, int] | int | None = None) -> CameraPath:
    """A `kind` path (PATHS) of `frames` frames from the pairing's scene's training cameras, at their field of view."""
    assert kind in PATHS, kind
    views = camera_split(run, pairing, "train")
    aabb = torch.tensor(run.config.data.aabb)
    centre = (aabb[:3] + aabb[3:]) / 2
    if kind == "orbit":
        poses = orbit_path(views.poses, centre, frames)
    elif kind == "interpolate":
        poses = interpolated_path(views.poses, frames)
    else:
        forward = -views.poses[:, :3, 2].mean(0)
        if forward.norm() < FORWARD_FACING:
            warn_once(
                f"--path spiral: the cameras of {pairing.scene} look in many directions (not a forward-facing capture); --path orbit or interpolate may suit it better"
            )
        poses = spiral_path(views.poses, centre, frames)
    camera = sized_camera(views.camera, size)
    return CameraPath(poses, torch.full((frames,), vertical_fov(camera)), camera.width, camera.height)


def render_path(
    run: LoadedRun,
    pairing: Pairing,
    path: CameraPath,
    name: str,
    video: bool = True,
    progress=None,
    background: Tensor | None = None,  # [3]; None: the pairing's own backdrop
) -> RenderOutputs:
    """Renders the frames of a camera path to RUN/renders/<scene>_<style>/<name>_NNN.png (and <name>.mp4 at its fps)."""
    folder = run.run_dir / "renders" / pairing.slug
    folder.mkdir(parents=True, exist_ok=True)
    images, frames = [], []
    for i in range(len(path)):
        pixels = to_uint8(run.built.render_image(pairing, path.poses[i], path.camera(i), background))
        image = folder / f"{name}_{i:03d}.png"
        write_image(image, pixels)
        images.append(image)
        if video:
            frames.append(pixels)
        if progress is not None:
            progress(len(images), len(path))
    video_path = None
    if video:
        video_path = folder / f"{name}.mp4"
        write_video(video_path, frames, path.fps)
    return RenderOutputs(folder, images, video_path)


def render_pairing(
    run: LoadedRun,
    pairing: Pairing,
    split: str = "test",
    orbit: int = 0,
    video: bool = False,
    progress=None,
    background: Tensor | None = None,  # [3]; None: the pairing's own backdrop
    size: tuple[int, int] | int | None = None,
    fps: float = VIDEO_FPS,
) -> RenderOutputs:
    """Renders a pairing from a split's views (and an orbit of `orbit` frames) to PNGs, at `size` (see `sized_camera`).

    With `video`, the orbit (or, without one, the split's views) also becomes an MP4 at `fps`.
    `progress`, if given, is called with (done, total) after each frame.
    """
    folder = run.run_dir / "renders" / pairing.slug
    folder.mkdir(parents=True, exist_ok=True)
    views = camera_split(run, pairing, split)
    views = dataclasses.replace(views, camera=sized_camera(views.camera, size))
    poses = [(split, views.poses)]
    if orbit > 0:
        poses.append(("orbit", orbit_around(views, torch.tensor(run.config.data.aabb), orbit)))
    total = sum(len(p) for _, p in poses)
    images, frames = [], {}
    for prefix, group in poses:
        frames[prefix] = []
        for i, pose in enumerate(group):
            pixels = to_uint8(run.built.render_image(pairing, pose, views.camera, background))
            path = folder / f"{prefix}_{i:03d}.png"
            write_image(path, pixels)
            images.append(path)
            frames[prefix].append(pixels)
            if progress is not None:
                progress(len(images), total)
    video_path = None
    if video:
        video_path = folder / ("orbit.mp4" if orbit > 0 else f"{split}.mp4")
        write_video(video_path, frames["orbit" if orbit > 0 else split], fps)
    return RenderOutputs(folder, images, video_path)
