"""Blender-format datasets: transforms_{train,val,test}.json and their images.

The poses are used as they are (no recentring): Blender-format scenes are made for the
box (NeRF-synthetic: cameras at radius 4, objects inside +-1.5). The writer (the scene
kit's) puts a split's images in <split>/r_<i>.png.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from fastjoint.data.cameras import Camera
from fastjoint.data.split import (
    SPLITS,
    DatasetFormat,
    Split,
    WrittenViews,
    is_number,
    read_frame_pose,
    read_images,
    read_json,
)
from fastjoint.errors import UserError

__all__ = ["BLENDER", "SPLITS", "Split", "is_blender", "load_blender", "transforms_path", "write_blender"]


def transforms_path(root: Path, split: str) -> Path:
    return Path(root) / f"transforms_{split}.json"


def is_blender(root: Path) -> bool:
    return any(transforms_path(root, split).is_file() for split in SPLITS)


def load_blender(root: Path, split: str, downscale: int = 1) -> Split:
    """Loads one split; raises UserError for bad JSON or bad images."""
    path = transforms_path(root, split)
    if not path.is_file():
        raise UserError(f"{path}: not found (a Blender-format dataset needs transforms_{split}.json)")
    meta = read_json(path)
    angle = meta.get("camera_angle_x")
    if not is_number(angle) or not 0.0 < angle < math.pi:
        raise UserError(f"{path}: 'camera_angle_x' must be a number in (0, pi), got {angle!r}")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise UserError(f"{path}: 'frames' must be a non-empty list")

    paths, poses = [], []
    for i, frame in enumerate(frames):
        where = f"{path}: frames[{i}]"
        poses.append(read_frame_pose(frame, where).astype(np.float32))
        paths.append(image_path(root, frame, where))

    pixels, transparent = read_images(paths, downscale)
    camera = Camera.from_angle(pixels.shape[2], pixels.shape[1], float(angle))
    names = tuple(p.relative_to(root).as_posix() for p in paths)
    return Split(pixels, torch.from_numpy(np.stack(poses)), camera, transparent, path, names=names)


def image_path(root: Path, frame: dict, where: str) -> Path:
    """A frame's image: file_path relative to the folder, with or without its .png ending."""
    file_path = frame.get("file_path")
    if not isinstance(file_path, str) or not file_path:
        raise UserError(f"{where} has no 'file_path'")
    path = root / file_path
    # The Blender exporter writes file_path without the extension; some tools add it.
    candidates = [path] if path.suffix.lower() in (".png", ".jpg", ".jpeg") else [path.with_name(path.name + ".png"), path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(f"{candidates[0]}: image not found ({where}.file_path is '{file_path}')")


def write_blender(root: Path, views: WrittenViews) -> None:
    """transforms_<split>.json for every split; file_path without the .png, as Blender's exporter writes it."""
    for split in SPLITS:
        frames = [
            {"file_path": "./" + name.removesuffix(".png"), "transform_matrix": pose.tolist()}
            for name, pose in zip(views.names[split], views.poses[split])
        ]
        meta = {"camera_angle_x": views.camera_angle_x, "frames": frames}
        transforms_path(root, split).write_text(json.dumps(meta, indent=1))


def image_name(split: str, index: int) -> str:
    """Where the writer's view `index` of `split` goes, relative to the dataset folder."""
    return f"{split}/r_{index}.png"


BLENDER = DatasetFormat(
    name="blender",
    expected="transforms_train.json for Blender format",
    detect=is_blender,
    load=load_blender,
    write=write_blender,
    image_name=image_name,
    split_file=transforms_path,
)
