"""Pictures and videos of a trained run: RUN/renders/<scene>_<style>/."""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor

from fastjoint.camera_path import orbit_path
from fastjoint.data import Split, load_split
from fastjoint.files import atomic_path, write_image
from fastjoint.pairing import ORIGINAL, Pairing
from fastjoint.run import LoadedRun

VIDEO_FPS = 24
VIDEO_MIN_SIDE = 256  # small renders are enlarged (nearest neighbour) so a player shows them


class RenderOutputs(NamedTuple):
    folder: Path
    images: list[Path]
    video: Path | None


def camera_split(run: LoadedRun, pairing: Pairing, split: str) -> Split:
    """The views of a pairing's scene: its original-style dataset holds the cameras."""
    data = run.config.data
    return load_split(data.dataset(Pairing(pairing.scene, ORIGINAL)), split, data.downscale)


def orbit_around(split: Split, aabb: Tensor, n: int) -> Tensor:  # [n, 4, 4]
    """An orbit at the mean distance and elevation of the split's cameras, around the box centre."""
    return orbit_path(split.poses, (aabb[:3] + aabb[3:]) / 2, n)


def to_uint8(image: Tensor) -> np.ndarray:
    return (image.clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    """H.264 MP4 (imageio's ffmpeg plugin); small frames are enlarged, odd sizes padded."""
    height, width = frames[0].shape[:2]
    factor = max(1, math.ceil(VIDEO_MIN_SIDE / min(height, width)))
    stack = np.stack(frames)
    if factor > 1:
        stack = stack.repeat(factor, axis=1).repeat(factor, axis=2)
    pad_h, pad_w = stack.shape[1] % 2, stack.shape[2] % 2
    if pad_h or pad_w:
        stack = np.pad(stack, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with atomic_path(path) as partial:
        iio.imwrite(partial, stack, fps=VIDEO_FPS, extension=".mp4")


def render_pairing(
    run: LoadedRun,
    pairing: Pairing,
    split: str = "test",
    orbit: int = 0,
    video: bool = False,
    progress=None,
    background: Tensor | None = None,  # [3]; None: the pairing's own backdrop
) -> RenderOutputs:
    """Renders a pairing from a split's views (and an orbit of `orbit` frames) to PNGs.

    With `video`, the orbit (or, without one, the split's views) also becomes an MP4.
    `progress`, if given, is called with (done, total) after each frame.
    """
    folder = run.run_dir / "renders" / pairing.slug
    folder.mkdir(parents=True, exist_ok=True)
    views = camera_split(run, pairing, split)
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
        write_video(video_path, frames["orbit" if orbit > 0 else split])
    return RenderOutputs(folder, images, video_path)
