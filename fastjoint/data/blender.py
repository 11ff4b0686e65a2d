"""Blender-format datasets: transforms_{train,val,test}.json and their images.

Every problem with a user's files is a UserError naming the file (and the frame) at fault.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor

from fastjoint.data.cameras import Camera
from fastjoint.errors import UserError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """The views of one split of one dataset."""

    images: Tensor  # [n, H, W, 4] float32 RGBA, straight alpha (alpha 1 for RGB images)
    poses: Tensor  # [n, 4, 4] camera-to-world
    camera: Camera
    has_alpha: bool
    source: Path  # the transforms JSON

    def __len__(self) -> int:
        return self.images.shape[0]

    def on_background(self, background: Tensor) -> Tensor:  # [3] -> [n, H, W, 3]
        """The images composited over a background colour."""
        alpha = self.images[..., 3:]
        return self.images[..., :3] * alpha + background * (1.0 - alpha)


def transforms_path(root: Path, split: str) -> Path:
    return Path(root) / f"transforms_{split}.json"


def load_split(root: str | Path, split: str, downscale: int = 1) -> Split:
    """Loads one split; raises UserError for a missing folder, bad JSON or bad images."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: dataset folder not found")
    path = transforms_path(root, split)
    if not path.is_file():
        raise UserError(f"{path}: not found (a Blender-format dataset needs transforms_{split}.json)")
    meta = _read_json(path)
    angle = meta.get("camera_angle_x")
    if not _is_number(angle) or not 0.0 < angle < math.pi:
        raise UserError(f"{path}: 'camera_angle_x' must be a number in (0, pi), got {angle!r}")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise UserError(f"{path}: 'frames' must be a non-empty list")

    images, poses = [], []
    first: tuple[Path, tuple[int, int]] | None = None
    has_alpha = False
    for i, frame in enumerate(frames):
        where = f"{path}: frames[{i}]"
        if not isinstance(frame, dict):
            raise UserError(f"{where} must be an object")
        poses.append(_read_pose(frame, where))
        image_path = _image_path(root, frame, where)
        image, alpha = _read_image(image_path)
        has_alpha |= alpha
        if first is None:
            first = (image_path, image.shape[:2])
        elif image.shape[:2] != first[1]:
            h, w = image.shape[:2]
            raise UserError(
                f"{image_path}: image is {w}x{h} but {first[0].name} is {first[1][1]}x{first[1][0]}; "
                "all images of a split must be the same size"
            )
        images.append(image)

    height, width = first[1]
    if height % downscale or width % downscale:
        raise UserError(f"data.downscale: {downscale} does not divide the {width}x{height} images of {path}")
    stack = torch.from_numpy(np.stack(images))
    if downscale > 1:
        stack = _downscale(stack, downscale)
    camera = Camera.from_angle(width // downscale, height // downscale, float(angle))
    return Split(stack, torch.from_numpy(np.stack(poses)), camera, has_alpha, path)


def _read_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON (line {error.lineno} column {error.colno}: {error.msg})") from None
    except (UnicodeDecodeError, OSError) as error:
        raise UserError(f"{path}: cannot read ({error})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: must hold a JSON object")
    return meta


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_pose(frame: dict, where: str) -> np.ndarray:
    matrix = frame.get("transform_matrix")
    if matrix is None:
        raise UserError(f"{where} has no 'transform_matrix'")
    if not (
        isinstance(matrix, list)
        and len(matrix) == 4
        and all(isinstance(row, list) and len(row) == 4 and all(_is_number(v) for v in row) for row in matrix)
    ):
        raise UserError(f"{where}.transform_matrix must be a 4x4 matrix of numbers")
    pose = np.asarray(matrix, dtype=np.float32)
    if not np.isfinite(pose).all():
        raise UserError(f"{where}.transform_matrix contains NaN or infinity")
    rotation = pose[:3, :3].astype(np.float64)
    scale = float(np.abs(rotation).max())
    if scale == 0.0 or abs(np.linalg.det(rotation / scale)) < 1e-6:
        raise UserError(f"{where}.transform_matrix has a degenerate rotation (its 3x3 part is not invertible)")
    return pose


def _image_path(root: Path, frame: dict, where: str) -> Path:
    file_path = frame.get("file_path")
    if not isinstance(file_path, str) or not file_path:
        raise UserError(f"{where} has no 'file_path'")
    path = root / file_path
    # The Blender exporter writes file_path without the extension; some tools add it.
    candidates = [path] if path.suffix.lower() == ".png" else [path.with_name(path.name + ".png"), path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(f"{candidates[0]}: image not found ({where}.file_path is '{file_path}')")


def _read_image(path: Path) -> tuple[np.ndarray, bool]:  # [H, W, 4] float32 straight alpha, has alpha
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (0 bytes), not an image")
    try:
        with warnings.catch_warnings():  # imageio warns while it tries plugins on a broken file
            warnings.simplefilter("ignore")
            image = iio.imread(path)
    except Exception as error:  # imageio raises many types for a broken file
        raise UserError(f"{path}: cannot read image ({type(error).__name__}: {error})".splitlines()[0]) from None
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise UserError(f"{path}: expected an RGB or RGBA image, got shape {image.shape}")
    if np.issubdtype(image.dtype, np.integer):
        image = image.astype(np.float32) / np.iinfo(image.dtype).max
    else:
        image = image.astype(np.float32)
    has_alpha = image.shape[-1] == 4
    if not has_alpha:
        image = np.concatenate([image, np.ones_like(image[..., :1])], axis=-1)
    return image, has_alpha


def _downscale(images: Tensor, factor: int) -> Tensor:  # [n, H, W, 4] -> [n, H/f, W/f, 4]
    """Area-averages premultiplied colour and alpha, then returns straight alpha."""
    alpha = images[..., 3:]
    premultiplied = torch.cat([images[..., :3] * alpha, alpha], dim=-1).permute(0, 3, 1, 2)
    small = torch.nn.functional.avg_pool2d(premultiplied, factor).permute(0, 2, 3, 1)
    small_alpha = small[..., 3:]
    rgb = torch.where(small_alpha > 0, small[..., :3] / small_alpha.clamp(min=1e-8), torch.zeros_like(small[..., :3]))
    return torch.cat([rgb, small_alpha], dim=-1).contiguous()
