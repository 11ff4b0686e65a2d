"""nerfstudio-format datasets: one transforms.json for every view, images beside it.

Follows nerfstudio's data conventions: OpenGL camera axes in `transform_matrix`
(camera-to-world, 4x4); intrinsics `fl_x`, `fl_y`, `cx`, `cy`, `w`, `h` at the top of the
file or in each frame (a frame's values win); `camera_model` OPENCV (the default, with
`k1`, `k2`, `k3`, `p1`, `p2`, zero when absent), PINHOLE or SIMPLE_PINHOLE; `file_path`
relative to the folder. The poses already include `applied_transform` (nerfstudio records
there what it applied to the original, e.g. COLMAP, frame); it is checked, not applied.
Splits: the optional `train_filenames`, `val_filenames`, `test_filenames` lists, else
every 8th view held out (see `select_views`). The scene is recentred into the box (see
`recentre.py`). The writer (the scene kit's) writes an OPENCV camera without distortion,
the split lists, and puts the images in images/<split>_r_<i>.png.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fastjoint.data.cameras import NO_DISTORTION, Camera
from fastjoint.data.recentre import apply_transform, scene_transform
from fastjoint.data.split import (
    SPLITS,
    DatasetFormat,
    Split,
    WrittenViews,
    is_number,
    read_frame_pose,
    read_json,
    read_pose,
    read_scaled,
    select_views,
    split_lists,
)
from fastjoint.errors import UserError

TRANSFORMS = "transforms.json"
CAMERA_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE")
INTRINSICS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
DISTORTION = ("k1", "k2", "p1", "p2", "k3")  # Camera.distortion's order


def is_nerfstudio(root: Path) -> bool:
    return (root / TRANSFORMS).is_file()


def load_nerfstudio(root: Path, split: str, downscale: int = 1) -> Split:
    """Loads one split of a nerfstudio dataset; UserError naming the file and key on mistakes."""
    path = root / TRANSFORMS
    meta = read_json(path)
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise UserError(f"{path}: 'frames' must be a non-empty list")
    if "applied_transform" in meta:
        matrix = meta["applied_transform"]
        rows = len(matrix) if isinstance(matrix, list) and len(matrix) in (3, 4) else 4
        read_pose(matrix, f"{path}: applied_transform", rows=rows)

    poses, names, cameras = [], [], []
    for i, frame in enumerate(frames):
        where = f"{path}: frames[{i}]"
        poses.append(read_frame_pose(frame, where))
        file_path = frame.get("file_path")
        if not isinstance(file_path, str) or not file_path:
            raise UserError(f"{where} has no 'file_path'")
        names.append(file_path)
        cameras.append(_camera(meta, frame, path, where))

    chosen = select_views(names, split_lists(meta, str(path)), split, str(path))
    for i in chosen:
        if cameras[i] != cameras[chosen[0]]:
            raise UserError(
                f"{path}: frames[{i}] has other intrinsics than frames[{chosen[0]}]; fastjoint needs one camera per split ('{split}')"
            )
    camera = cameras[chosen[0]]
    paths = []
    for i in chosen:
        image = root / names[i]
        if not image.is_file():
            raise UserError(f"{image}: image not found ({path}: frames[{i}].file_path is '{names[i]}')")
        paths.append(image)

    transform = scene_transform(np.stack(poses))
    moved = apply_transform(np.stack([poses[i] for i in chosen]), transform)
    pixels, transparent = read_scaled(root, paths, downscale, (camera.width, camera.height))
    if downscale > 1:
        camera = camera.scaled(downscale)
    names_chosen = tuple(Path(names[i]).as_posix() for i in chosen)
    reach = _declared_reach(meta, path, transform)
    return Split(
        pixels, torch.from_numpy(moved.astype(np.float32)), camera, transparent, path, torch.from_numpy(transform), names_chosen, reach
    )


def _declared_reach(meta: dict, path: Path, transform: np.ndarray) -> float | None:
    """How far from the scene's origin the capture's content reaches, from instant-ngp's `aabb_scale`.

    instant-ngp maps a file's point x to x * scale + offset (its `scale`, default 0.33, and `offset`,
    default 0.5 on every axis, with its axes cycled: its x, y, z are the file's y, z, x) and holds the
    scene in the cube of side aabb_scale about (0.5, 0.5, 0.5). Returns the half-size, in the scene's
    units, of the cube about the scene's origin that holds that one; None without `aabb_scale`.
    """
    if "aabb_scale" not in meta:
        return None
    values = {}
    for key, default in (("aabb_scale", None), ("scale", 0.33)):
        value = meta.get(key, default)
        if not is_number(value) or not np.isfinite(value) or value <= 0:
            raise UserError(f"{path}: '{key}' must be a positive number, got {value!r}")
        values[key] = float(value)
    offset = meta.get("offset", [0.5, 0.5, 0.5])
    if not (isinstance(offset, list) and len(offset) == 3 and all(is_number(v) and np.isfinite(v) for v in offset)):
        raise UserError(f"{path}: 'offset' must be a list of 3 numbers, got {offset!r}")
    ngp_centre = (0.5 - np.array(offset, dtype=np.float64)) / values["scale"]  # in the file's units, instant-ngp's axes
    centre = ngp_centre[[2, 0, 1]]  # the file's x, y, z
    half = values["aabb_scale"] / 2 / values["scale"]
    scale = transform[0, 0]  # the similarity's scale (it has no rotation)
    moved = transform[:3, :3] @ centre + transform[:3, 3]
    return float(np.abs(moved).max() + scale * half)


def _camera(meta: dict, frame: dict, path: Path, where: str) -> Camera:
    """A frame's intrinsics: its own keys, else the file's."""

    def value(key: str, default=None):
        if key in frame:
            return frame[key], f"{where}.{key}"
        if key in meta:
            return meta[key], f"{path}: '{key}'"
        if default is None:
            raise UserError(f"{where}: no '{key}' (neither in the frame nor at the top of the file)")
        return default, key

    model, model_where = value("camera_model", "OPENCV")
    if model not in CAMERA_MODELS:
        raise UserError(f"{model_where}: camera model {model!r} is not supported (use one of {', '.join(CAMERA_MODELS)})")
    numbers = {}
    for key in INTRINSICS:
        number, key_where = value(key)
        if not is_number(number) or not np.isfinite(number) or number <= 0:
            raise UserError(f"{key_where} must be a positive number, got {number!r}")
        numbers[key] = float(number)
    for key in ("w", "h"):
        if not numbers[key].is_integer():
            raise UserError(f"{where}: '{key}' must be a whole number of pixels, got {numbers[key]!r}")
    distortion = NO_DISTORTION
    if model == "OPENCV":
        coefficients = []
        for key in DISTORTION:
            number, key_where = value(key, 0.0)
            if not is_number(number) or not np.isfinite(number):
                raise UserError(f"{key_where} must be a number, got {number!r}")
            coefficients.append(float(number))
        distortion = tuple(coefficients)
    return Camera(int(numbers["w"]), int(numbers["h"]), numbers["fl_x"], numbers["fl_y"], numbers["cx"], numbers["cy"], distortion)


def write_nerfstudio(root: Path, views: WrittenViews) -> None:
    """transforms.json: the camera at the top of the file, every split's frames, and the split lists."""
    camera = views.camera
    meta = {
        "camera_model": "OPENCV",
        "fl_x": camera.focal,
        "fl_y": camera.focal_y,
        "cx": camera.cx,
        "cy": camera.cy,
        "w": camera.width,
        "h": camera.height,
        "k1": 0.0,
        "k2": 0.0,
        "p1": 0.0,
        "p2": 0.0,
        "frames": [
            {"file_path": name, "transform_matrix": pose.tolist()}
            for split in SPLITS
            for name, pose in zip(views.names[split], views.poses[split])
        ],
        **{f"{split}_filenames": views.names[split] for split in SPLITS},
    }
    (root / TRANSFORMS).write_text(json.dumps(meta, indent=1))


def image_name(split: str, index: int) -> str:
    """Where the writer's view `index` of `split` goes, relative to the dataset folder."""
    return f"images/{split}_r_{index}.png"


NERFSTUDIO = DatasetFormat(
    name="nerfstudio",
    expected="transforms.json for nerfstudio",
    detect=is_nerfstudio,
    load=load_nerfstudio,
    write=write_nerfstudio,
    image_name=image_name,
)
